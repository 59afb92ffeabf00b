// authgate test / demo OpenID Connect provider, built on `oidc-provider` (v9).
//
// Start:  cd tests/idp && npm ci && node idp.js
// It prints exactly one line on stdout, `IDP READY <issuer>`, once it is listening; every
// other message (oidc-provider's development warnings, errors, IDP_DEBUG request logs) goes
// to stderr. SIGTERM / SIGINT close the listener and exit with status 0.
//
// Configuration (all optional):
//
//   IDP_PORT          TCP port to listen on (default 9400). 0: a free port the kernel picks;
//                     the ready line's issuer then names it (the default issuer uses the
//                     port actually bound).
//   IDP_HOST          listen address (default 127.0.0.1).
//   IDP_TLS_CERT, IDP_TLS_KEY  PEM files (server certificate chain, private key): serve HTTPS
//                     (node's https.createServer) instead of plain HTTP; both or neither. The
//                     default issuer is then https://127.0.0.1:<port>. The certificate must
//                     name the issuer's host (and 127.0.0.1 / IDP_HOST: the auto-login logout
//                     hop below calls the provider itself over https, trusting the CAs in node's
//                     NODE_EXTRA_CA_CERTS, which the test harness sets to the test CA).
//   IDP_ISSUER        issuer URL (default http://127.0.0.1:<bound port>). It goes into the `iss`
//                     claim and discovery's `issuer`. The *endpoint* URLs in discovery are built
//                     from the Host header of the discovery request (oidc-provider behaviour), so
//                     fetch discovery with the same host the browser/gateway will use. A path in
//                     the issuer (e.g. http://127.0.0.1:9400/realms/test) is supported: the
//                     provider is then served under that path only.
//   IDP_CLIENTS       JSON array of client metadata. Missing fields get the defaults below
//                     (client_secret_basic; authorization_code + refresh_token +
//                     client_credentials; response_types ["code"]). Default: one client
//                       {"client_id":"authgate","client_secret":"authgate-secret",
//                        "redirect_uris":["http://localhost:8080/.authgate/callback",
//                                         "http://127.0.0.1:8080/.authgate/callback"],
//                        "post_logout_redirect_uris":["http://localhost:8080/",
//                                                     "http://127.0.0.1:8080/"]}
//                     Redirect URIs are matched exactly (scheme, host, port, path, query),
//                     unless IDP_LOOPBACK_ANY_PORT is on.
//   IDP_LOOPBACK_ANY_PORT  "1": a redirect URI or post-logout redirect URI on http://127.0.0.1
//                     or http://localhost matches a registered one that differs only in its
//                     port (RFC 8252 section 7.3: a loopback redirect URI may use any port),
//                     e.g. a registered http://127.0.0.1/.authgate/callback accepts
//                     http://127.0.0.1:41234/.authgate/callback. For tests whose gateway binds
//                     port 0, i.e. learns its port only after the provider is configured.
//                     Other hosts and schemes stay exact. Default off (exact matching).
//                     Back-Channel Logout (see below): "backchannel_logout_uri" (http:// on
//                     127.0.0.1 / localhost / any host is fine) makes the client receive logout
//                     tokens; "backchannel_logout_session_required" defaults to true for such a
//                     client (oidc-provider's own default is false), so its ID tokens and logout
//                     tokens carry `sid`. Set it to false for sub-only logout tokens and ID tokens
//                     without sid. E.g.
//                       {"client_id":"authgate","client_secret":"authgate-secret",
//                        "redirect_uris":["http://127.0.0.1:8080/.authgate/callback"],
//                        "backchannel_logout_uri":
//                          "http://127.0.0.1:8080/.authgate/backchannel-logout"}
//   IDP_USERS         JSON object {accountId: {claims...}} merged over the built-in users
//                     (alice, bob; see USERS below). `sub` defaults to the accountId. Any
//                     other login name typed into the form signs in as an ad-hoc user (see
//                     findAccount).
//   IDP_AUTO_LOGIN    "1": no forms at all. Every interaction (login, then consent) completes
//                     at once as IDP_AUTO_LOGIN_ACCOUNT, and RP-initiated logout needs no
//                     confirmation, so a plain HTTP client that follows redirects can run the
//                     whole authorization-code flow and the logout. Unset: oidc-provider's
//                     devInteractions (a real HTML login form, then a consent form), for the
//                     browser tests and the demo.
//   IDP_AUTO_LOGIN_ACCOUNT  account used by IDP_AUTO_LOGIN (default alice).
//   IDP_REFRESH_TOKENS  when the authorization_code grant returns a refresh_token:
//                     "always" (default): every time, for clients allowed the refresh_token
//                       grant (like Keycloak). Without offline_access such a refresh token is
//                       bound to the IdP session: it stops working after end_session.
//                     "offline_access": stock oidc-provider behaviour: only when the granted
//                       scope has offline_access, which oidc-provider only keeps in the
//                       authorization request together with prompt=consent.
//                     "never": no refresh tokens from the authorization_code grant.
//   IDP_ROTATE_REFRESH_TOKENS  "1" (default): every refresh returns a new refresh_token and
//                     consumes the old one (re-using a consumed one revokes the whole grant,
//                     oidc-provider's replay defence). "0": refresh tokens are never rotated.
//   IDP_ACCESS_TOKEN_TTL, IDP_ID_TOKEN_TTL, IDP_REFRESH_TOKEN_TTL, IDP_SESSION_TTL
//                     lifetimes in seconds (defaults 300, 300, 3600, 3600). Tests of the
//                     gateway's refresh logic can set short access/ID token lifetimes.
//   IDP_AT_ALG        JWS alg of JWT access tokens for resources without a fixed alg (see
//                     "JWT access tokens" below): RS256 (default, kid test-rsa-1) or ES256
//                     (kid test-ec-1). Anything else is a startup error.
//   IDP_RESOURCE_SCOPES  space-separated scopes a resource server accepts (default
//                     "api:read api:write"). They only ever go into JWT access tokens: a
//                     request without `resource` drops them.
//   IDP_BACKCHANNEL_LOGOUT  "1" (default): OpenID Connect Back-Channel Logout 1.0 is on
//                     (discovery has backchannel_logout_supported and
//                     backchannel_logout_session_supported true). "0": off; discovery lacks both
//                     fields, backchannel_logout_* client metadata is ignored, nothing is sent.
//   IDP_CONFORM_ID_TOKEN_CLAIMS  "1": ID tokens carry only sub and protocol claims; email,
//                     profile and groups come from userinfo only.
//   IDP_DEBUG         "1": log every request (method, path, status) to stderr.
//
// Test-only endpoints (not part of OIDC; under the issuer's path when it has one):
//
//   GET  /__test/stats        JSON counters: successful token requests by grant type
//                             (`token`), failed ones (`token_errors`), refresh-token rotations,
//                             authorizations, logouts (real end_session confirmations only),
//                             introspections, revocations, userinfo requests, back-channel
//                             logout deliveries by client (`backchannel_logout`:
//                             {"<client_id>": {"success": n, "failure": n}}, counting end_session,
//                             /__test/logout and /__test/backchannel deliveries) and all requests
//                             by oidc-provider route name.
//   POST /__test/stats/reset  zero the counters (answers 204).
//   POST /__test/users?account=<id>&claims=<JSON object>  merge claims into an account (e.g.
//                             new groups); later ID tokens (a refresh) carry them. Answers the
//                             account's claims.
//   POST /__test/logout?account=<accountId>
//                             ends every IdP session of that account (sessions of this process)
//                             exactly like a confirmed end_session, without a browser; answers
//                             only after every back-channel delivery finished. See "Back-Channel
//                             Logout" below for the answer.
//   POST /__test/backchannel?client_id=<id>[&sub=..][&sid=..][&nonce=..]
//                             signs a logout token with the chosen claims and POSTs it to that
//                             client's backchannel_logout_uri. See below.
//   POST /__test/clients?client_id=<id>&backchannel_logout_uri=<URI>
//                             moves that client's back-channel logout deliveries to <URI>
//                             (e.g. a gateway on a port it bound after the provider started).
//                             The client must have been registered with a
//                             backchannel_logout_uri (a placeholder will do: its other
//                             back-channel settings come from that registration). Answers 204;
//                             400 for an unknown client, one without backchannel_logout_uri,
//                             or a URI that is not absolute http(s).
//   POST /__test/jwks?down=1  the JWKS endpoint (GET /jwks) answers 503 from now on, while
//                             discovery and everything else keep working; `down=0` restores it.
//                             Answers 204. (Liveness tests: a JWKS that dies alone.)
//   GET  /__test/end_session_confirm?xsrf=...  (IDP_AUTO_LOGIN only) internal hop that
//                             confirms RP-initiated logout without a form; see below.
//
// JWT access tokens (RFC 8707 resource indicators + RFC 9068 token format):
//
//   A token request WITHOUT `resource` gets the usual opaque access token (usable at userinfo
//   and introspection), exactly as before. A token request with resource=<indicator> gets a
//   JWT access token for that resource server (not usable at userinfo). Known indicators:
//   urn:authgate:<anything> and http(s)://api.<anything>; others -> 400 invalid_target.
//     JOSE header: {"alg": <see below>, "typ": "at+jwt", "kid": "test-rsa-1" | "test-ec-1"}
//     claims:      iss, sub (user id, or the client_id for client_credentials), aud (= the
//                  resource, verbatim), client_id, iat, exp (iat + IDP_ACCESS_TOKEN_TTL), jti,
//                  scope (the requested scopes that are in IDP_RESOURCE_SCOPES; the claim is
//                  absent when there are none; openid/email/profile never appear here), and for
//                  user tokens only also email, groups (array, may be empty) and
//                  preferred_username.
//     alg:         urn:authgate:api -> RS256 always; an indicator ending in "-es256" or
//                  "-rs256" (e.g. urn:authgate:api-es256) -> that alg; any other -> IDP_AT_ALG.
//   Verify with GET /jwks (fresh keys on every start). The token response's `scope` is then
//   the access token's scope (e.g. "api:read"), not the OIDC scopes.
//
//   Client credentials (the `authgate` client has the grant; one resource per request):
//     curl -s -u authgate:authgate-secret http://127.0.0.1:9400/token \
//       -d grant_type=client_credentials -d resource=urn:authgate:api -d 'scope=api:read api:write'
//     -> {"access_token":"eyJ...","expires_in":300,"scope":"api:read api:write",
//         "token_type":"Bearer"}
//
//   User token (authorization_code): `resource` must be in the authorization request (so that
//   the grant covers it) AND in the token request (with `openid` in the scope and no
//   `resource` at /token, oidc-provider issues the opaque userinfo token instead):
//     GET /auth?client_id=authgate&response_type=code
//         &redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F.authgate%2Fcallback
//         &scope=openid%20email%20profile%20api%3Aread&resource=urn%3Aauthgate%3Aapi
//         &state=s&nonce=n&code_challenge=<S256 of verifier>&code_challenge_method=S256
//       (IDP_AUTO_LOGIN=1: e.g. curl -s -c jar -b jar -L --max-redirs 10 -o /dev/null
//        -w '%{url_effective}' '<that URL>' ends at the callback URL with ?code=...; curl fails to
//        connect there unless something listens, the URL is printed anyway)
//     curl -s -u authgate:authgate-secret http://127.0.0.1:9400/token \
//       -d grant_type=authorization_code -d code=<code> -d code_verifier=<verifier> \
//       --data-urlencode redirect_uri=http://localhost:8080/.authgate/callback \
//       -d resource=urn:authgate:api
//     -> access_token (JWT, scope "api:read", with email/groups/preferred_username),
//        id_token and refresh_token as without resource. A refresh_token grant with
//        resource=<an indicator of the authorization request> also returns a JWT.
//
//   Introspection (POST /token/introspection, client auth as for /token) answers for both
//   kinds. For a JWT: {"active":true, ...the token's claims, "token_type":"Bearer"} when the
//   signature, typ, iss and exp are fine and the grant still exists (user tokens: inactive
//   after the grant is revoked, e.g. by revoking its refresh token); {"active":false}
//   otherwise. oidc-provider itself would answer 400 unsupported_token_type; the middleware
//   below substitutes this answer. Revocation of JWT access tokens stays unsupported
//   (400 unsupported_token_type), as does using them at userinfo.
//     curl -s -u authgate:authgate-secret http://127.0.0.1:9400/token/introspection \
//       --data-urlencode token=<access token>
//
// Back-Channel Logout (OpenID Connect Back-Channel Logout 1.0):
//
//   When an IdP session ends (end_session confirmed with logout=yes: the "Yes, sign me out"
//   button, the IDP_AUTO_LOGIN redirect hop, or POST /__test/logout), every client that took
//   part in the session and has a backchannel_logout_uri gets
//     POST <backchannel_logout_uri>   content-type: application/x-www-form-urlencoded
//     logout_token=<JWT>
//   (with the "No, stay signed in" button only the client named by the end_session request is
//   notified and signed out; the session stays). The RP
//   must answer 200 or 204 within 2.5 s (anything else, redirects included, is a failure;
//   failures are logged to stderr and counted, never retried; the logout itself still
//   completes). Deliveries go out in parallel and end_session waits for all of them before its
//   303. Loopback / private addresses are allowed (oidc-provider 9 refuses them by default as
//   SSRF protection; see `fetch` in the configuration).
//     JOSE header: {"alg": <client's id_token_signed_response_alg, default RS256>,
//                   "typ": "logout+jwt", "kid": "test-rsa-1" (ES256 clients: "test-ec-1")}
//     claims:      sub (the accountId),
//                  events {"http://schemas.openid.net/event/backchannel-logout": {}},
//                  jti, sid (only with backchannel_logout_session_required: the `sid` of the
//                  client's ID tokens from that session), aud (client_id), exp (iat + 120),
//                  iat, iss. Never a nonce.
//   ID tokens of a client with backchannel_logout_session_required carry `sid` (one value per
//   IdP session and client); other clients' ID tokens are unchanged (no sid).
//
//   POST /__test/logout?account=alice  (query parameter; no body, no auth)
//     -> 200 {"sessions": <IdP sessions ended>,
//             "notified": [{"client_id": "authgate", "sub": "alice",
//                           "sid": "<as in the logout token; absent when the token has none>",
//                           "status": 200}, ...]}
//     A delivery that failed has "error": "<message>" (and "status" when the RP answered, e.g.
//     500). Clients without backchannel_logout_uri are not listed. Per session: deliveries, then
//     the grants of its clients are revoked (tokens dead, as after end_session, except grants
//     with offline_access), then the session is deleted (the browser's next /auth logs in again,
//     with a new sid). An account without sessions -> {"sessions":0,"notified":[]};
//     no account -> 400 {"error":"invalid_request",...}. `logouts` in the stats is not bumped.
//
//   POST /__test/backchannel?client_id=authgate&sub=alice&sid=<sid>
//     Builds a logout token with oidc-provider's own ID token machinery (same header, key, iss,
//     aud, iat, exp, jti, events as above), with `sub` and `sid` each only when given (so
//     sub-only, sid-only, or neither for negative tests) and `nonce` only when nonce= is given
//     (RPs must reject that). Sends it like a real delivery and answers
//     -> 200 {"client_id": .., "sub": .., "sid": .., "logout_token": "<the JWT sent>",
//             "status": <RP's HTTP status>[, "error": ".."]}
//     Unknown client_id, client without backchannel_logout_uri (or IDP_BACKCHANNEL_LOGOUT=0),
//     missing client_id -> 400 {"error":"invalid_request",...}.
//
// Cheat-sheet for tests (default settings):
//
//   Authorize:  GET /auth?client_id=authgate&response_type=code&redirect_uri=<registered>
//               &scope=openid+email+profile&state=..&nonce=..&code_challenge=<S256>
//               &code_challenge_method=S256   (PKCE is mandatory; only S256 is accepted)
//               -> 303s through /interaction/<uid> and /auth/<uid> -> 303 to
//               <redirect_uri>?code=..&state=..&iss=<issuer>
//   Token:      POST /token, HTTP Basic client auth, grant_type=authorization_code, code,
//               redirect_uri, code_verifier -> access_token (opaque; a JWT with resource=,
//               see above), id_token (RS256, with
//               email, name, preferred_username, groups, nonce), refresh_token.
//               `offline_access` in the scope is dropped by oidc-provider unless the request
//               also has prompt=consent (in every IDP_REFRESH_TOKENS mode).
//   Login form  (devInteractions, title "Sign-in"): <form method=post> with
//               input[name=login], input[name=password] (anything is accepted),
//               button[type=submit] "Sign-in".
//   Consent     (title "Authorize"): <form method=post> with a hidden prompt=consent and
//               button[type=submit] "Continue". A later login in the same browser session
//               that asks for no new scopes skips both forms.
//   Logout:     GET /session/end?id_token_hint=..&post_logout_redirect_uri=<registered>&state=..
//               Browser mode: confirmation page, button#logout-yes "Yes, sign me out".
//               Auto-login mode: 303s only. Ends with a 303 to
//               <post_logout_redirect_uri>?state=.. (or to /session/end/success), after the
//               back-channel logout deliveries (see above) have finished.

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  createPublicKey, generateKeyPairSync, randomBytes, timingSafeEqual, verify as cryptoVerify,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------------------------------------
// Environment

function envInt(name, fallback, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function envJson(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new Error(`${name} is not valid JSON: ${err.message}`);
  }
}

const PORT = envInt('IDP_PORT', 9400, 0);
const HOST = process.env.IDP_HOST || '127.0.0.1';
if (!process.env.IDP_TLS_CERT !== !process.env.IDP_TLS_KEY) {
  throw new Error('IDP_TLS_CERT and IDP_TLS_KEY go together');
}
// HTTPS when both are set: { cert, key } for https.createServer.
const TLS = process.env.IDP_TLS_CERT
  ? { cert: readFileSync(process.env.IDP_TLS_CERT), key: readFileSync(process.env.IDP_TLS_KEY) }
  : null;
const SCHEME = TLS ? 'https' : 'http';
// Listen before anything else, so that with IDP_PORT=0 the issuer can name the port the kernel
// picked. The request handler is attached at the end; nobody knows the port before the ready
// line anyway. A taken port fails the start (EADDRINUSE on stderr).
const server = TLS ? https.createServer(TLS) : http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, HOST, resolve);
});
const BOUND_PORT = server.address().port;
const ISSUER = (process.env.IDP_ISSUER || `${SCHEME}://127.0.0.1:${BOUND_PORT}`).replace(/\/+$/, '');
const LOOPBACK_ANY_PORT = process.env.IDP_LOOPBACK_ANY_PORT === '1';
const AUTO_LOGIN = process.env.IDP_AUTO_LOGIN === '1';
const AUTO_LOGIN_ACCOUNT = process.env.IDP_AUTO_LOGIN_ACCOUNT || 'alice';
const REFRESH_TOKENS = process.env.IDP_REFRESH_TOKENS || 'always';
const ROTATE_REFRESH_TOKENS = (process.env.IDP_ROTATE_REFRESH_TOKENS ?? '1') !== '0';
const DEBUG = process.env.IDP_DEBUG === '1';
const AT_ALG = process.env.IDP_AT_ALG || 'RS256';
const RESOURCE_SCOPES = (process.env.IDP_RESOURCE_SCOPES ?? 'api:read api:write')
  .split(/\s+/).filter(Boolean).join(' ');
const BACKCHANNEL_LOGOUT = (process.env.IDP_BACKCHANNEL_LOGOUT ?? '1') !== '0';

const TTL = {
  AccessToken: envInt('IDP_ACCESS_TOKEN_TTL', 300),
  IdToken: envInt('IDP_ID_TOKEN_TTL', 300),
  RefreshToken: envInt('IDP_REFRESH_TOKEN_TTL', 3600),
  Session: envInt('IDP_SESSION_TTL', 3600),
};

if (!['always', 'offline_access', 'never'].includes(REFRESH_TOKENS)) {
  throw new Error('IDP_REFRESH_TOKENS must be one of always, offline_access, never');
}
// The algorithms of the two signing keys below.
const AT_ALGS = ['RS256', 'ES256'];
if (!AT_ALGS.includes(AT_ALG)) {
  throw new Error(`IDP_AT_ALG must be one of ${AT_ALGS.join(', ')}, got ${JSON.stringify(AT_ALG)}`);
}

// The path part of the issuer, '' when the issuer is a bare origin.
const MOUNT = new URL(ISSUER).pathname.replace(/\/+$/, '');

// ---------------------------------------------------------------------------------------------
// Clients

const DEFAULT_CLIENTS = [{
  client_id: 'authgate',
  client_secret: 'authgate-secret',
  redirect_uris: [
    'http://localhost:8080/.authgate/callback',
    'http://127.0.0.1:8080/.authgate/callback',
  ],
  post_logout_redirect_uris: [
    'http://localhost:8080/',
    'http://127.0.0.1:8080/',
  ],
}];

// application_type "web" (the default) accepts http:// redirect URIs on any host, localhost
// and 127.0.0.1 included, as long as the client does not use the implicit grant, so plain
// http loopback callbacks need no special setting.
//
// Back-Channel Logout: a client with backchannel_logout_uri gets
// backchannel_logout_session_required true unless it says otherwise, so that its ID tokens and
// logout tokens carry `sid` (oidc-provider only adds sid to ID tokens of such clients). With
// IDP_BACKCHANNEL_LOGOUT=0 both fields are dropped (oidc-provider does not know them then).
const CLIENTS = envJson('IDP_CLIENTS', DEFAULT_CLIENTS).map((client) => {
  const full = {
    application_type: 'web',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    ...(client.backchannel_logout_uri !== undefined
      ? { backchannel_logout_session_required: true } : {}),
    ...client,
  };
  if (!BACKCHANNEL_LOGOUT) {
    delete full.backchannel_logout_uri;
    delete full.backchannel_logout_session_required;
  }
  return full;
});

// ---------------------------------------------------------------------------------------------
// Accounts

const USERS = {
  alice: {
    email: 'alice@example.com',
    email_verified: true,
    name: 'Alice Example',
    preferred_username: 'alice',
    groups: ['admins', 'dev'],
  },
  bob: {
    email: 'bob@example.org',
    email_verified: true,
    name: 'Bob Example',
    preferred_username: 'bob',
    groups: ['dev'],
  },
  ...envJson('IDP_USERS', {}),
};

// oidc-provider asks for an account by id: the login name typed into the devInteractions form
// (any password is accepted), the auto-login account, or the accountId stored in a token.
// devInteractions accepts any login name and oidc-provider fails with a server_error when a
// signed-in account is then not found, so a name that is not in USERS gets an ad-hoc account:
// sub = the name, email <name>@example.com (verified), no groups.
async function findAccount(_ctx, id) {
  const user = Object.hasOwn(USERS, id) ? USERS[id] : {
    email: `${id}@example.com`,
    email_verified: true,
    name: id,
    preferred_username: id,
    groups: [],
  };
  return {
    accountId: id,
    // Returns every claim; oidc-provider filters them by the granted scopes/claims.
    async claims() {
      return { sub: id, ...user };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Signing keys: fresh for every start (an RSA key for RS256, the default ID token alg, and an
// EC P-256 key so that a client can ask for ES256 via id_token_signed_response_alg).

function jwk(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const JWKS = {
  keys: [
    jwk('rsa', { modulusLength: 2048 }, 'test-rsa-1', 'RS256'),
    jwk('ec', { namedCurve: 'P-256' }, 'test-ec-1', 'ES256'),
  ],
};

// ---------------------------------------------------------------------------------------------
// Resource servers: JWT access tokens (RFC 8707 resource indicators, RFC 9068 token format)

// The resource indicators this IdP knows: urn:authgate:<anything> and http(s)://api.<anything>.
const isKnownResource = (resource) => /^urn:authgate:./.test(resource)
  || /^https?:\/\/api\./.test(resource);

// JWS algorithm of the access tokens for a resource: urn:authgate:api is always RS256, a
// resource ending in "-es256" / "-rs256" gets that algorithm, any other IDP_AT_ALG.
function resourceAlg(resource) {
  if (resource === 'urn:authgate:api') return 'RS256';
  const suffix = /-(rs256|es256)$/i.exec(resource);
  return suffix ? suffix[1].toUpperCase() : AT_ALG;
}

// Public keys for checking our own JWT access tokens at the introspection endpoint.
const VERIFY_KEYS = new Map(JWKS.keys.map((key) => [key.kid, {
  alg: key.alg,
  key: createPublicKey({ key, format: 'jwk' }),
}]));

// jti -> { grantId, exp } of every JWT access token issued by this process. oidc-provider does
// not store JWT access tokens; this lets introspection report tokens of a revoked grant (e.g.
// after logout) as inactive, as it does for opaque tokens.
const issuedJwts = new Map();

function rememberJwt(token) {
  if (token.format !== 'jwt') return;
  const now = Math.floor(Date.now() / 1000);
  for (const [jti, entry] of issuedJwts) if (entry.exp < now) issuedJwts.delete(jti);
  issuedJwts.set(token.jti, { grantId: token.grantId, exp: now + token.expiration });
}

// Introspection response for a JWT access token (oidc-provider itself refuses to introspect
// JWTs: unsupported_token_type). Active when the signature (one of our keys, typ at+jwt), iss,
// exp and the grant (user tokens) are fine; the answer is the token's claims plus active and
// token_type, like oidc-provider's answer for an opaque token.
async function introspectJwt(client, jwt) {
  const inactive = { active: false };
  const parts = jwt.split('.');
  if (parts.length !== 3) return inactive;
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch {
    return inactive;
  }
  const key = VERIFY_KEYS.get(header?.kid);
  if (!key || header.alg !== key.alg || header.typ !== 'at+jwt') return inactive;
  const signatureOk = cryptoVerify(
    'sha256',
    Buffer.from(`${parts[0]}.${parts[1]}`),
    key.alg === 'ES256' ? { key: key.key, dsaEncoding: 'ieee-p1363' } : key.key,
    Buffer.from(parts[2], 'base64url'),
  );
  if (!signatureOk || payload.iss !== ISSUER) return inactive;
  if (!Number.isInteger(payload.exp) || payload.exp <= Math.floor(Date.now() / 1000)) return inactive;
  const issued = issuedJwts.get(payload.jti);
  if (!issued) return inactive;
  if (issued.grantId) {
    const grant = await provider.Grant.find(issued.grantId);
    if (!grant || grant.clientId !== payload.client_id) return inactive;
  }
  // Same rule as features.introspection.allowedPolicy below.
  if (client.clientAuthMethod === 'none' && payload.client_id !== client.clientId) return inactive;
  return { ...payload, active: true, token_type: 'Bearer' };
}

// ---------------------------------------------------------------------------------------------
// Counters for GET /__test/stats

function newStats() {
  return {
    token: {}, // successful token responses by grant_type
    token_errors: {}, // failed token requests by grant_type ("unknown" when absent)
    refresh_token_rotations: 0, // refresh tokens consumed by a rotation
    grants_revoked: 0, // e.g. a consumed refresh token was replayed, or logout
    authorizations: 0, // successful authorization responses (code sent to the client)
    logouts: 0, // completed end_session confirmations
    introspections: 0,
    revocations: 0,
    userinfo: 0,
    // Back-Channel Logout deliveries by client_id: {"<client_id>": {"success": n, "failure": n}}
    // (end_session, POST /__test/logout and POST /__test/backchannel alike).
    backchannel_logout: {},
    requests: {}, // every request by oidc-provider route name (or "other")
  };
}
let stats = newStats();
const bump = (map, key) => { map[key] = (map[key] || 0) + 1; };
const bumpBackchannel = (clientId, outcome) => {
  stats.backchannel_logout[clientId] ??= { success: 0, failure: 0 };
  stats.backchannel_logout[clientId][outcome] += 1;
};

// ---------------------------------------------------------------------------------------------
// Provider configuration

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const configuration = {
  clients: CLIENTS,
  findAccount,
  jwks: JWKS,

  // Fixed test key: session cookies stay valid across restarts with the same key.
  // long.sameSite "none": oidc-provider's precondition for accepting POST at end_session
  // (RP-Initiated Logout 1.0 §2: an OP must accept GET and POST; authgate POSTs so the ID
  // token hint never appears in a URL).
  cookies: {
    keys: ['authgate-test-idp-cookie-key-not-a-secret'],
    long: { sameSite: 'none' },
  },
  enableHttpPostMethods: true,

  // Outgoing HTTP requests (here: Back-Channel Logout deliveries). oidc-provider 9 passes a
  // `dispatcher` that refuses connections to loopback, private and other special-use addresses
  // (SSRF protection: "hostname resolves to a special-use IP address"), which would make every
  // delivery to a test RP on 127.0.0.1 / localhost fail. Dropping it is what oidc-provider's own
  // test suite does. The answer's status is also recorded for POST /__test/logout.
  async fetch(url, options) {
    delete options.dispatcher;
    const response = await globalThis.fetch(url, options);
    const delivery = deliveryContext.getStore();
    if (delivery) delivery.status = response.status;
    return response;
  },

  // Scope -> claims. `groups` is its own scope and also part of `profile`, so a plain
  // "openid email profile" request gets the groups claim too.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    // The custom claims some tests give their users (IDP_USERS, /__test/users): a nested
    // object, an array, a number and a boolean, as Keycloak-like providers issue them. Users
    // without them (alice and bob as built in) get none.
    profile: ['name', 'preferred_username', 'groups', 'department', 'employee_number', 'active', 'realm_access', 'nicknames'],
    groups: ['groups'],
    // (acr, sid, auth_time, iss as in oidc-provider's defaults)
    acr: null,
    sid: null,
    auth_time: null,
    iss: null,
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],

  // Authorization-code flow only (no implicit / hybrid response types).
  responseTypes: ['code'],

  // Put every granted claim (email, name, groups, ...) into the ID token itself, not only
  // into the userinfo response.
  // IDP_CONFORM_ID_TOKEN_CLAIMS=1: oidc-provider's strict default instead, where ID tokens
  // issued with an access token carry only `sub` and protocol claims, and everything else
  // (email, groups, ...) is served by userinfo (like Okta's org server).
  conformIdTokenClaims: process.env.IDP_CONFORM_ID_TOKEN_CLAIMS === '1',

  // PKCE for every client, confidential ones included (oidc-provider 9 only requires it for
  // public clients by default). v9 supports S256 only; "plain" is rejected.
  pkce: { required: () => true },

  ttl: {
    AccessToken: TTL.AccessToken,
    ClientCredentials: TTL.AccessToken,
    AuthorizationCode: 60,
    IdToken: TTL.IdToken,
    Interaction: 600,
    Session: TTL.Session,
    Grant: TTL.RefreshToken,
    RefreshToken: TTL.RefreshToken,
  },

  issueRefreshToken(_ctx, client, code) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    switch (REFRESH_TOKENS) {
      case 'always': return true;
      case 'offline_access': return code.scopes.has('offline_access');
      default: return false;
    }
  },
  rotateRefreshToken: ROTATE_REFRESH_TOKENS,

  // Claims added to access tokens. Only JWT access tokens of a user (authorization_code or
  // refresh_token grant with a resource indicator) get any: the user's email, groups and
  // preferred_username. Opaque access tokens (no resource) and client_credentials tokens get
  // none, so their introspection answers stay as they were.
  async extraTokenClaims(ctx, token) {
    if (!token.resourceServer || token.resourceServer.accessTokenFormat !== 'jwt') return undefined;
    if (!token.accountId) return undefined;
    const account = await findAccount(ctx, token.accountId);
    const claims = await account.claims();
    const extra = {};
    for (const name of ['email', 'groups', 'preferred_username']) {
      if (claims[name] !== undefined) extra[name] = claims[name];
    }
    return extra;
  },

  features: {
    // The built-in HTML login + consent forms; replaced by the auto-login middleware below.
    devInteractions: { enabled: !AUTO_LOGIN },
    clientCredentials: { enabled: true },
    // RFC 8707. A token request with resource=<known indicator> gets a JWT access token with
    // aud = the resource; without `resource` the access token stays opaque (userinfo,
    // introspection), exactly as before. For authorization_code, the resource must also be in
    // the authorization request (the grant only covers resources that were authorized).
    resourceIndicators: {
      enabled: true,
      // No resource parameter -> no resource server -> opaque access token.
      async defaultResource() {
        return undefined;
      },
      // Only with resource= in the token request itself (the oidc-provider default).
      async useGrantedResource() {
        return false;
      },
      async getResourceServerInfo(_ctx, resource) {
        if (!isKnownResource(resource)) {
          throw new errors.InvalidTarget(
            'unknown resource indicator (known: urn:authgate:*, http(s)://api.*)',
          );
        }
        return {
          scope: RESOURCE_SCOPES,
          accessTokenFormat: 'jwt',
          accessTokenTTL: TTL.AccessToken,
          jwt: { sign: { alg: resourceAlg(resource) } },
        };
      },
    },
    introspection: {
      enabled: true,
      // Any authenticated confidential client may introspect (the default, made explicit).
      allowedPolicy: (ctx, client, token) => !(client.clientAuthMethod === 'none'
        && token.clientId !== ctx.oidc.client.clientId),
    },
    revocation: {
      enabled: true,
      allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
    },
    // OpenID Connect Back-Channel Logout 1.0: when an IdP session ends (end_session confirmed,
    // or POST /__test/logout), every client of that session that has a backchannel_logout_uri
    // gets a logout token POSTed to it (see "Back-Channel Logout" in the header).
    backchannelLogout: { enabled: BACKCHANNEL_LOGOUT },
    rpInitiatedLogout: {
      enabled: true,
      // Rendered by GET/POST /session/end when the browser has an IdP session (without one,
      // oidc-provider sends a self-submitting form instead). In auto-login mode the middleware
      // below replaces either page with a redirect. `form` is oidc-provider's hidden form
      // (id "op.logoutForm", carrying the xsrf token); the buttons submit it.
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Logout Request</title></head>
<body>
  <h1>Do you want to sign out from ${htmlEscape(ctx.host)}?</h1>
  ${form}
  <button id="logout-yes" autofocus type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
  <button id="logout-no" type="submit" form="op.logoutForm">No, stay signed in</button>
</body></html>`;
      },
      // Shown after logout when no post_logout_redirect_uri was given.
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign-out Success</title></head>
<body><h1 id="signed-out">Sign-out Success</h1></body></html>`;
      },
    },
  },

  // In auto-login mode the middleware below serves /interaction/<uid> (the default path, plus
  // the issuer's path). devInteractions sets its own URL, so leave it alone then.
  ...(AUTO_LOGIN ? {
    interactions: { url: (_ctx, interaction) => `${MOUNT}/interaction/${interaction.uid}` },
  } : {}),

  // Plain error page without external resources; the error code and description are shown
  // in elements with stable ids for tests.
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>IdP error</title></head>
<body><h1>IdP error</h1>
<p id="error">${htmlEscape(out.error)}</p>
<p id="error_description">${htmlEscape(out.error_description ?? '')}</p></body></html>`;
  },
};

const provider = new Provider(ISSUER, configuration);

// IDP_LOOPBACK_ANY_PORT: RFC 8252 section 7.3 for http loopback redirect URIs of any client
// (oidc-provider does it only for application_type "native", which also forces a consent
// prompt on every login). A URI with the port stripped, or undefined when it is not
// http on a loopback host.
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost']);
function withoutLoopbackPort(uri) {
  const url = URL.parse(uri);
  if (!url || url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname)) return undefined;
  url.port = '';
  return url.href;
}
if (LOOPBACK_ANY_PORT) {
  const { prototype } = provider.Client;
  for (const [method, registered] of [
    ['redirectUriAllowed', 'redirectUris'],
    ['postLogoutRedirectUriAllowed', 'postLogoutRedirectUris'],
  ]) {
    const exact = prototype[method];
    prototype[method] = function anyLoopbackPort(value) {
      if (exact.call(this, value)) return true;
      const bare = withoutLoopbackPort(value);
      return bare !== undefined
        && (this[registered] ?? []).some((uri) => withoutLoopbackPort(uri) === bare);
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Events -> counters

provider.on('grant.success', (ctx) => bump(stats.token, ctx.oidc.params?.grant_type ?? 'unknown'));
provider.on('grant.error', (ctx) => bump(stats.token_errors, ctx.oidc?.params?.grant_type ?? 'unknown'));
provider.on('refresh_token.consumed', () => { stats.refresh_token_rotations += 1; });
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('authorization.success', () => { stats.authorizations += 1; });
provider.on('end_session.success', () => { stats.logouts += 1; });
provider.on('server_error', (_ctx, err) => console.error('idp: server_error', err));
provider.on('access_token.issued', rememberJwt);
provider.on('client_credentials.issued', rememberJwt);
provider.on('introspection.error', (ctx, err) => { ctx.state.introspectionError = err; });
provider.on('backchannel.success', (_ctx, client) => bumpBackchannel(client.clientId, 'success'));
provider.on('backchannel.error', (_ctx, err, client) => {
  bumpBackchannel(client.clientId, 'failure');
  console.error(`idp: back-channel logout to ${client.clientId} failed: ${describeError(err)}`);
});
provider.on('session.saved', (session) => sessionIds.add(session.jti));
provider.on('session.destroyed', (session) => sessionIds.delete(session.jti));

// ---------------------------------------------------------------------------------------------
// Back-Channel Logout helpers (POST /__test/logout, POST /__test/backchannel)

const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

// Ids of the IdP sessions saved by this process. oidc-provider's adapter has no lookup by
// account, so POST /__test/logout looks at each of these; ids of sessions that no longer exist
// (expired, or replaced when oidc-provider rotates a session id) are dropped then.
const sessionIds = new Set();

// Set around one delivery so that configuration.fetch can record the RP's HTTP status
// (client.backchannelLogout() itself resolves with nothing).
const deliveryContext = new AsyncLocalStorage();

function describeError(err) {
  const cause = err?.cause;
  const detail = cause ? `: ${[cause.code, cause.message].filter(Boolean).join(' ')}` : '';
  return `${err?.message ?? err}${detail}`;
}

async function findClient(clientId) {
  try {
    return await provider.Client.find(clientId);
  } catch {
    return undefined;
  }
}

// One logout token to one client exactly as end_session sends it: oidc-provider's
// client.backchannelLogout(sub, sid) builds and signs the token (sid only when the client has
// backchannel_logout_session_required) and POSTs it, expecting 200 or 204; then the same
// backchannel.success / backchannel.error event.
async function notifyClient(ctx, client, accountId, sid) {
  const delivery = {};
  const result = {
    client_id: client.clientId,
    sub: accountId,
    ...(client.backchannelLogoutSessionRequired ? { sid } : {}),
  };
  try {
    await deliveryContext.run(delivery, () => client.backchannelLogout(accountId, sid));
    provider.emit('backchannel.success', ctx, client, accountId, sid);
    return { ...result, status: delivery.status };
  } catch (err) {
    provider.emit('backchannel.error', ctx, err, client, accountId, sid);
    return {
      ...result,
      ...(delivery.status !== undefined ? { status: delivery.status } : {}),
      error: describeError(err),
    };
  }
}

// oidc-provider's revoke(ctx, grantId) as end_session calls it (that helper is internal): drop
// every token of the grant, then the grant itself (revokeGrantPolicy is the default, true).
async function revokeGrant(ctx, grantId) {
  await Promise.all([
    provider.AccessToken.revokeByGrantId(grantId),
    provider.RefreshToken.revokeByGrantId(grantId),
    provider.AuthorizationCode.revokeByGrantId(grantId),
    provider.Grant.adapter.destroy(grantId),
  ]);
  provider.emit('grant.revoked', ctx, grantId);
}

// Ends every IdP session of an account the way a confirmed end_session (logout=yes) does:
// back-channel logout to every client of the session that has a backchannel_logout_uri (all
// awaited), revocation of each client's grant (unless offline_access made it outlive the
// session), then the session itself is destroyed. The browser's session cookie then points to
// nothing, so its next authorization request needs a new login.
async function endAccountSessions(ctx, accountId) {
  const sessions = [];
  for (const id of [...sessionIds]) {
    const session = await provider.Session.find(id);
    if (!session) sessionIds.delete(id);
    else if (session.accountId === accountId) sessions.push(session);
  }

  const notified = [];
  for (const session of sessions) {
    const clientIds = Object.keys(session.authorizations || {});
    const clients = await Promise.all(clientIds.map(findClient));
    notified.push(...await Promise.all(clients
      .filter((client) => BACKCHANNEL_LOGOUT && client?.backchannelLogoutUri)
      .map((client) => notifyClient(
        ctx,
        client,
        session.accountId,
        session.sidFor(client.clientId),
      ))));
    await Promise.all(clientIds.map(async (clientId) => {
      const grantId = session.grantIdFor(clientId);
      if (grantId && !session.authorizationFor(clientId).persistsLogout) {
        await revokeGrant(ctx, grantId);
      }
    }));
    await session.destroy();
  }
  return { sessions: sessions.length, notified };
}

// A logout token with chosen claims, signed the way oidc-provider signs its own (IdToken with
// use "logout": the client's ID token alg and the matching provider key, typ logout+jwt,
// iss/aud/iat/exp (iat + 120)/jti/events), POSTed like client.backchannelLogout() does. sub and
// sid are each left out when not given; nonce (forbidden in logout tokens) only when given.
async function sendLogoutToken(ctx, client, { sub, sid, nonce }) {
  const token = new provider.IdToken(sub !== undefined ? { sub } : {}, { client, ctx: undefined });
  token.mask = { sub: null };
  token.set('events', { [BACKCHANNEL_LOGOUT_EVENT]: {} });
  token.set('jti', randomBytes(16).toString('base64url'));
  if (sid !== undefined) token.set('sid', sid);
  if (nonce !== undefined) token.set('nonce', nonce);
  const logoutToken = await token.issue({ use: 'logout' });

  const result = {
    client_id: client.clientId,
    ...(sub !== undefined ? { sub } : {}),
    ...(sid !== undefined ? { sid } : {}),
    logout_token: logoutToken,
  };
  let status;
  try {
    const response = await globalThis.fetch(new URL(client.backchannelLogoutUri).href, {
      method: 'POST',
      redirect: 'manual',
      signal: AbortSignal.timeout(2500),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'user-agent': '' },
      body: new URLSearchParams({ logout_token: logoutToken }),
    });
    status = response.status;
    await response.arrayBuffer().catch(() => {});
    if (status !== 200 && status !== 204) {
      throw new Error(`expected 200 OK from ${client.backchannelLogoutUri}, `
        + `got: ${status} ${http.STATUS_CODES[status]}`);
    }
    provider.emit('backchannel.success', ctx, client, sub, sid);
    return { ...result, status };
  } catch (err) {
    provider.emit('backchannel.error', ctx, err, client, sub, sid);
    return { ...result, ...(status !== undefined ? { status } : {}), error: describeError(err) };
  }
}

// ---------------------------------------------------------------------------------------------
// Koa middleware (runs before oidc-provider's own routes)

// Request log, per-route counters and the /__test endpoints.
let jwksDown = false;
provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/clients' && ctx.method === 'POST') {
    const client = await provider.Client.find(String(ctx.query.client_id ?? ''));
    const uri = URL.parse(String(ctx.query.backchannel_logout_uri ?? ''));
    if (!client?.backchannelLogoutUri || !['http:', 'https:'].includes(uri?.protocol)) {
      ctx.status = 400;
      ctx.body = {
        error: 'invalid_request',
        error_description: 'needs a client with a backchannel_logout_uri and an http(s) URI',
      };
      return;
    }
    client.backchannelLogoutUri = uri.href;
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/__test/jwks' && ctx.method === 'POST') {
    jwksDown = ctx.query.down === '1';
    ctx.status = 204;
    return;
  }
  if (jwksDown && ctx.path === '/jwks') {
    ctx.status = 503;
    ctx.body = 'jwks down (POST /__test/jwks?down=1)';
    return;
  }
  if (ctx.path === '/__test/stats' && ctx.method === 'GET') {
    ctx.set('cache-control', 'no-store');
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/__test/stats/reset' && ctx.method === 'POST') {
    stats = newStats();
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/__test/users' && ctx.method === 'POST') {
    const id = ctx.query.account;
    let patch;
    try {
      patch = JSON.parse(ctx.query.claims ?? '');
    } catch {
      patch = undefined;
    }
    if (!id || !patch || typeof patch !== 'object') {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: 'account and claims (a JSON object) are required' };
      return;
    }
    USERS[id] = { ...(USERS[id] ?? {}), ...patch };
    ctx.body = USERS[id];
    return;
  }

  try {
    await next();
    // devInteractions' page layout @imports a Google web font. Tests run without network
    // access (and must not send traffic off the machine), so drop it from every HTML page.
    if (typeof ctx.body === 'string' && ctx.body.includes('fonts.googleapis.com')) {
      ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, '');
    }
  } finally {
    // oidc-provider's route name; for our own paths (auto-login interactions, /__test/...)
    // the path with the interaction uid dropped.
    const route = ctx.oidc?.route ?? ctx.path.replace(/^\/interaction\/[^/]+/, '/interaction');
    bump(stats.requests, route);
    if (route === 'introspection' && ctx.status === 200) stats.introspections += 1;
    if (route === 'revocation' && ctx.status === 200) stats.revocations += 1;
    if (route === 'userinfo' && ctx.status === 200) stats.userinfo += 1;
    if (DEBUG) console.error(`idp: ${ctx.method} ${ctx.path} -> ${ctx.status} (${route})`);
  }
});

// POST /__test/logout?account=<accountId> and
// POST /__test/backchannel?client_id=..[&sub=..][&sid=..][&nonce=..] (see the header).
provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !['/__test/logout', '/__test/backchannel'].includes(ctx.path)) {
    return next();
  }
  ctx.set('cache-control', 'no-store');
  const param = (name) => {
    const value = ctx.query[name];
    const first = Array.isArray(value) ? value[0] : value;
    return first === undefined || first === '' ? undefined : String(first);
  };
  const invalid = (description) => {
    ctx.status = 400;
    ctx.body = { error: 'invalid_request', error_description: description };
  };
  try {
    if (ctx.path === '/__test/logout') {
      const account = param('account');
      if (!account) return invalid('account is required');
      ctx.body = await endAccountSessions(ctx, account);
      return undefined;
    }
    const clientId = param('client_id');
    if (!clientId) return invalid('client_id is required');
    const client = await findClient(clientId);
    if (!client) return invalid(`unknown client_id ${clientId}`);
    if (!client.backchannelLogoutUri) {
      return invalid(`client ${clientId} has no backchannel_logout_uri`
        + (BACKCHANNEL_LOGOUT ? '' : ' (IDP_BACKCHANNEL_LOGOUT=0)'));
    }
    ctx.body = await sendLogoutToken(ctx, client, {
      sub: param('sub'), sid: param('sid'), nonce: param('nonce'),
    });
  } catch (err) {
    console.error(`idp: ${ctx.path} failed`, err);
    ctx.status = 500;
    ctx.body = { error: 'server_error', error_description: describeError(err) };
  }
  return undefined;
});

// Introspection of JWT access tokens. oidc-provider authenticates the client as for any
// introspection request, then rejects a JWT with 400 unsupported_token_type; that answer is
// replaced here by introspectJwt's (200). Client authentication errors are left alone.
provider.use(async (ctx, next) => {
  await next();
  if (
    ctx.oidc?.route === 'introspection'
    && ctx.state.introspectionError instanceof errors.UnsupportedTokenType
    && ctx.oidc.client
    && typeof ctx.oidc.params?.token === 'string'
  ) {
    ctx.status = 200;
    ctx.type = 'json';
    ctx.body = await introspectJwt(ctx.oidc.client, ctx.oidc.params.token);
  }
});

if (AUTO_LOGIN) {
  // Interactions without forms. oidc-provider redirects the browser from /auth to
  // /interaction/<uid> whenever a prompt is pending; the flow then goes:
  //   /auth -> /interaction/<uid> (login: finished as the auto-login account)
  //         -> /auth/<uid> (resume) -> /interaction/<uid2> (consent: every requested scope and
  //            claim granted) -> /auth/<uid2> -> redirect_uri?code=...&state=...&iss=...
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (!match || ctx.method !== 'GET') return next();

    const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: AUTO_LOGIN_ACCOUNT } };
    } else if (prompt.name === 'consent') {
      // Same as devInteractions' consent submit: grant exactly what is missing.
      const { details } = prompt;
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
      if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
      if (details.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      result = { consent: { grantId: await grant.save() } };
    } else {
      ctx.throw(501, `auto-login cannot handle prompt ${prompt.name}`);
    }

    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: prompt.name !== 'login',
    });
    ctx.set('cache-control', 'no-store');
    ctx.status = 303;
    ctx.redirect(returnTo);
  });

  // RP-initiated logout without a confirmation form. oidc-provider answers GET /session/end
  // with an HTML page (a confirmation form when there is an IdP session, an auto-submitting
  // POST form otherwise) whose form POSTs {xsrf, logout: "yes"} to /session/end/confirm; a
  // plain HTTP client can follow neither. So, after oidc-provider has rendered that page and
  // saved the xsrf secret in the session, we answer with a 303 to
  // /__test/end_session_confirm?xsrf=<secret> instead; that endpoint makes the POST itself
  // (loopback request with the caller's cookies) and relays the answer: a 303 to
  // post_logout_redirect_uri (with state) or to /session/end/success, clearing the
  // IdP session cookie.
  provider.use(async (ctx, next) => {
    if (ctx.path === '/__test/end_session_confirm' && ctx.method === 'GET') {
      const selfUrl = `${SCHEME}://${['0.0.0.0', '::', '[::]'].includes(HOST) ? '127.0.0.1' : HOST}:${BOUND_PORT}`;
      const res = await fetch(`${selfUrl}${MOUNT}/session/end/confirm`, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          cookie: ctx.get('cookie'),
          host: ctx.get('host'),
        },
        body: new URLSearchParams({ xsrf: String(ctx.query.xsrf ?? ''), logout: 'yes' }),
      });
      ctx.status = res.status;
      ctx.set('cache-control', 'no-store');
      const setCookies = res.headers.getSetCookie();
      if (setCookies.length) ctx.set('set-cookie', setCookies);
      const location = res.headers.get('location');
      if (location) ctx.set('location', location);
      ctx.type = res.headers.get('content-type') || 'text/plain';
      ctx.body = await res.text();
      return;
    }

    await next();

    if (ctx.oidc?.route === 'end_session' && ctx.status === 200) {
      const secret = ctx.oidc.session?.state?.secret;
      if (secret) {
        ctx.status = 303;
        ctx.redirect(`${MOUNT}/__test/end_session_confirm?xsrf=${encodeURIComponent(secret)}`);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP server

// Browsers drop a SameSite=None cookie without Secure (Chrome since v80: "blocked because it
// had the SameSite=None attribute but did not have the Secure attribute"). oidc-provider's
// session cookie is SameSite=None (cookies.long above, required by enableHttpPostMethods), and
// over plain http oidc-provider cannot mark it Secure itself (the `cookies` module refuses:
// "Cannot send secure cookie over unencrypted connection"). So a browser would keep no IdP
// session: the consent step fails with "interaction session and authentication session
// mismatch" and POST /session/end finds no session to end. Browsers treat http://localhost and
// http://127.0.0.0/8 as secure contexts and do store and send Secure cookies there, so for a
// loopback issuer add the attribute here. (reqwest's cookie store does the same for loopback.)
const LOOPBACK_ISSUER = ['localhost', '[::1]'].includes(new URL(ISSUER).hostname)
  || /^127\.\d+\.\d+\.\d+$/.test(new URL(ISSUER).hostname);
const secureSameSiteNone = (cookie) => (
  /;\s*samesite=none\s*(;|$)/i.test(cookie) && !/;\s*secure\s*(;|$)/i.test(cookie)
    ? `${cookie}; secure` : cookie);

const callback = provider.callback();
const handler = (req, res) => {
  if (LOOPBACK_ISSUER) {
    const setHeader = res.setHeader.bind(res);
    res.setHeader = (name, value) => setHeader(
      name,
      String(name).toLowerCase() !== 'set-cookie' ? value
        : Array.isArray(value) ? value.map((c) => secureSameSiteNone(String(c)))
          : secureSameSiteNone(String(value)),
    );
  }
  if (MOUNT) {
    // Serve the provider under the issuer's path. oidc-provider derives its mount path from
    // req.originalUrl vs. req.url when building endpoint URLs.
    if (req.url !== MOUNT && !req.url.startsWith(`${MOUNT}/`) && !req.url.startsWith(`${MOUNT}?`)) {
      res.statusCode = 404;
      res.end('not found\n');
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(MOUNT.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
  }
  callback(req, res);
};
server.on('request', handler);
process.stdout.write(`IDP READY ${ISSUER}\n`);

function shutdown(signal) {
  if (DEBUG) console.error(`idp: ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
