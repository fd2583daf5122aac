// Package revocation carries Caracal's revocation events (docs/protocol.md section 6) from the
// process that revokes to every process that verifies mandates.
//
// The pieces:
//
//   - Event and EpochEvent are the entries of the caracal.sessions.revoke and
//     caracal.delegations.invalidate streams, with strict parsers and an HMAC signature
//     (Sign, VerifySignature) so a consumer can drop entries it did not expect.
//   - RevokedSet is the in-memory revocation set every verifier consults per request, and
//     Epochs the newest delegation graph epoch per zone.
//   - A Publisher writes entries; a Source keeps a RevokedSet and Epochs up to date. Redis
//     streams (RedisPublisher, RedisRevocationConsumer) connect separate processes;
//     Bus does the same inside one process when no Redis is configured.
//
// The package has no Caddy dependency: resource servers use it directly.
package revocation
