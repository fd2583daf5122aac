// An unmodified @modelcontextprotocol/sdk client reaches the demo MCP server through
// the gateway: on the first 401 the SDK follows resource_metadata to the RFC 9728
// metadata, discovers the zone (RFC 8414), gets a mandate with client_credentials and
// resource (ClientCredentialsProvider), then lists the tools, calls search and then
// delete. On delete's 403 insufficient_scope the SDK steps up by itself and retries:
// its new client_credentials request (which names no scope: the SDK sends the
// provider's own scope option, unset here) gets whatever the zone now grants, so the
// call works when the zone grants tool:delete and is refused when it does not. The script
// asserts nothing: it prints one JSON document of what the SDK observed, and the Go
// test that runs it decides.
//
// Environment: CARACAL_MCP_URL (the MCP endpoint), CARACAL_ISSUER (the zone's issuer,
// which the SDK checks the metadata's authorization server against), CARACAL_CLIENT_ID
// and CARACAL_CLIENT_SECRET; NODE_EXTRA_CA_CERTS trusts the server. With CARACAL_PAUSE
// set, the script writes "paused" to standard error before the delete call and waits
// for a line on standard input.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const provider = new ClientCredentialsProvider({
  clientId: env('CARACAL_CLIENT_ID'),
  clientSecret: env('CARACAL_CLIENT_SECRET'),
  expectedIssuer: env('CARACAL_ISSUER'),
});
const transport = new StreamableHTTPClientTransport(new URL(env('CARACAL_MCP_URL')), { authProvider: provider });
const client = new Client({ name: 'caracal-interop', version: '1.0.0' });

const out = {};
await client.connect(transport);
out.server = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((t) => t.name);
const allowed = await client.callTool({ name: 'search', arguments: { query: 'caracal' } });
out.allowed = { is_error: allowed.isError ?? false, text: allowed.content.map((c) => c.text).join('\n') };
out.scope_before_delete = provider.tokens()?.scope ?? null;
if (process.env.CARACAL_PAUSE) {
  // The test changes the zone's grants here, while this client holds its mandate.
  process.stderr.write('paused\n');
  for await (const _ of process.stdin) break;
}
try {
  const r = await client.callTool({ name: 'delete', arguments: { id: 'doc-1' } });
  out.delete = { refused: false, is_error: r.isError ?? false, text: r.content.map((c) => c.text).join('\n') };
} catch (err) {
  out.delete = { refused: true, name: err.constructor.name, code: err.code ?? null, message: String(err.message) };
}
out.mandate_scope = provider.tokens()?.scope ?? null;
await client.close();
process.stdout.write(JSON.stringify(out) + '\n');
