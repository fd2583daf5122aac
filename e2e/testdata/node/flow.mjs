// The agent's life cycle with unmodified client libraries: oauth4webapi discovers the
// zone (RFC 8414), gets session mandates with client_credentials (client_secret_basic
// and client_secret_post), a resource mandate in one step (RFC 8707 resource) and by
// token exchange (RFC 8693) with `none` identification, calls the gateway, and revokes
// the sessions (RFC 7009), with `none` identification and with client_secret_basic and
// a refresh_token hint; jose verifies the mandates against the zone's JWKS. The script
// asserts nothing: it prints one JSON document of what each library observed, and the
// Go test that runs it decides. It exits non-zero only when a library throws where the
// flow expects success.
//
// Environment: CARACAL_ISSUER (the zone's issuer), CARACAL_RESOURCE (the protected API),
// CARACAL_CLIENT_ID and CARACAL_CLIENT_SECRET; NODE_EXTRA_CA_CERTS trusts the server.
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const issuer = new URL(env('CARACAL_ISSUER'));
const resource = env('CARACAL_RESOURCE');
const client = { client_id: env('CARACAL_CLIENT_ID') };
const secret = env('CARACAL_CLIENT_SECRET');
const tokenExchange = 'urn:ietf:params:oauth:grant-type:token-exchange';
const accessTokenType = 'urn:ietf:params:oauth:token-type:access_token';

const out = {};

// refusal runs a request that the server is expected to refuse and records how the
// library reported it: the HTTP status and the RFC 6749 error, or the challenge.
async function refusal(fn) {
  try {
    await fn();
    return { refused: false };
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) {
      return { refused: true, status: err.status, error: err.error };
    }
    if (err instanceof oauth.WWWAuthenticateChallengeError) {
      // The library reports the challenge and leaves the body unread; an RFC 6749 error
      // in the body (a 401 invalid_client with a Basic challenge) is read from it.
      const c = err.cause[0];
      const body = await err.response.json().catch(() => ({}));
      return { refused: true, status: err.status, scheme: c.scheme, error: c.parameters.error ?? body.error };
    }
    throw err;
  }
}

// 1. RFC 8414 discovery: the library checks the issuer against the one it asked for.
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2' }),
);
out.metadata = {
  issuer: as.issuer,
  token_endpoint: as.token_endpoint,
  revocation_endpoint: as.revocation_endpoint,
  jwks_uri: as.jwks_uri,
  grant_types_supported: as.grant_types_supported,
  response_types_supported: as.response_types_supported,
  scopes_supported: as.scopes_supported,
  revocation_endpoint_auth_methods_supported: as.revocation_endpoint_auth_methods_supported,
};

// The mandates are verified against the zone's JWKS as any resource server would.
const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri));
const publicKeys = await (await fetch(as.jwks_uri)).json();

// verify checks the signature, issuer, audience and typ, and that the kid is the RFC 7638
// thumbprint of the key that verified it.
async function verify(token, typ, audience) {
  const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
    issuer: as.issuer,
    audience,
    typ,
    algorithms: ['ES256'],
  });
  const jwk = publicKeys.keys.find((k) => k.kid === protectedHeader.kid);
  return {
    alg: protectedHeader.alg,
    typ: protectedHeader.typ,
    kid_is_thumbprint: jwk !== undefined && (await jose.calculateJwkThumbprint(jwk, 'sha256')) === protectedHeader.kid,
    claims: payload,
  };
}

// 2. client_credentials, once with each way of sending the secret.
async function session(auth) {
  const res = await oauth.processClientCredentialsResponse(
    as,
    client,
    await oauth.clientCredentialsGrantRequest(as, client, auth, {}),
  );
  return res.access_token;
}
const basicSession = await session(oauth.ClientSecretBasic(secret));
const postSession = await session(oauth.ClientSecretPost(secret));
out.session_basic = await verify(basicSession, 'session+jwt', as.issuer);
out.session_post = await verify(postSession, 'session+jwt', as.issuer);

// A client_id without a secret does not authenticate at the token endpoint.
out.client_credentials_none = await refusal(async () =>
  oauth.processClientCredentialsResponse(
    as,
    client,
    await oauth.clientCredentialsGrantRequest(as, client, oauth.None(), {}),
  ),
);

// 3. client_credentials with resource and scope: a resource mandate in one step.
const direct = await oauth.processClientCredentialsResponse(
  as,
  client,
  await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic(secret), {
    resource,
    scope: 'read',
  }),
);
out.client_credentials_resource = {
  token_type: direct.token_type,
  scope: direct.scope,
  mandate: await verify(direct.access_token, 'at+jwt', resource),
};

// 4. Token exchange of the basic session for the resource, the client identified by
// client_id alone (none).
const exchanged = await oauth.processGenericTokenEndpointResponse(
  as,
  client,
  await oauth.genericTokenEndpointRequest(as, client, oauth.None(), tokenExchange, {
    subject_token: basicSession,
    subject_token_type: accessTokenType,
    resource,
    scope: 'read',
  }),
);
out.exchange = {
  token_type: exchanged.token_type,
  issued_token_type: exchanged.issued_token_type,
  scope: exchanged.scope,
  mandate: await verify(exchanged.access_token, 'at+jwt', resource),
};
// Identifying as another client than the subject token's is refused.
out.exchange_other_client = await refusal(async () => {
  const other = { client_id: 'no-such-client' };
  return oauth.processGenericTokenEndpointResponse(
    as,
    other,
    await oauth.genericTokenEndpointRequest(as, other, oauth.None(), tokenExchange, {
      subject_token: postSession,
      subject_token_type: accessTokenType,
      resource,
    }),
  );
});

// 5. The gateway accepts the exchanged mandate.
const api = new URL(resource + '/hello');
{
  const res = await oauth.protectedResourceRequest(exchanged.access_token, 'GET', api);
  out.call = { status: res.status, body: await res.json() };
}

// 6. RFC 7009 revocation of the session with none identification...
await oauth.processRevocationResponse(
  await oauth.revocationRequest(as, client, oauth.None(), basicSession),
);
out.revoked = true;

// ...after which the gateway refuses the exchanged mandate (the revocation reaches the
// gateway asynchronously, so the call is retried for a while) and a new exchange fails.
out.call_after_revoke = { refused: false };
for (let i = 0; i < 300 && !out.call_after_revoke.refused; i++) {
  out.call_after_revoke = await refusal(async () => {
    const res = await oauth.protectedResourceRequest(exchanged.access_token, 'GET', api);
    await res.arrayBuffer();
  });
  if (!out.call_after_revoke.refused) await new Promise((r) => setTimeout(r, 100));
}
out.exchange_after_revoke = await refusal(async () =>
  oauth.processGenericTokenEndpointResponse(
    as,
    client,
    await oauth.genericTokenEndpointRequest(as, client, oauth.None(), tokenExchange, {
      subject_token: basicSession,
      subject_token_type: accessTokenType,
      resource,
    }),
  ),
);

// Another client of the zone cannot revoke this client's session by naming itself.
out.revoke_as_other_client = await refusal(async () => {
  const other = { client_id: 'worker-agent' };
  return oauth.processRevocationResponse(
    await oauth.revocationRequest(as, other, oauth.None(), postSession),
  );
});

// The other session is untouched: it still exchanges, authenticated by client_secret_post.
const exchangePostSession = () =>
  refusal(async () =>
    oauth.processGenericTokenEndpointResponse(
      as,
      client,
      await oauth.genericTokenEndpointRequest(as, client, oauth.ClientSecretPost(secret), tokenExchange, {
        subject_token: postSession,
        subject_token_type: accessTokenType,
        resource,
      }),
    ),
  );
out.post_session_exchange = await exchangePostSession();

// 7. The other session, revoked with client_secret_basic and the hint a library sends
// for refresh tokens (RFC 7009 2.1: only a hint), no longer exchanges.
await oauth.processRevocationResponse(
  await oauth.revocationRequest(as, client, oauth.ClientSecretBasic(secret), postSession, {
    additionalParameters: { token_type_hint: 'refresh_token' },
  }),
);
out.post_session_exchange_after_revoke = await exchangePostSession();

process.stdout.write(JSON.stringify(out) + '\n');
