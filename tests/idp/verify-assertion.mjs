// Verify authgate's signed identity assertion the way an upstream would, with an independent
// JWT library (jose, already installed as oidc-provider's dependency).
//   node verify-assertion.mjs <jwks-url> <issuer> <audience> <token>
// Prints the verified claims as JSON, or exits 1 with the error.
import { createLocalJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
try {
  const jwks = await (await fetch(jwksUrl)).json();
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer,
    audience,
    algorithms: ['ES256'],
  });
  process.stdout.write(JSON.stringify({ header: protectedHeader, claims: payload }) + '\n');
} catch (e) {
  process.stderr.write(`verification failed: ${e.code ?? ''} ${e.message}\n`);
  process.exit(1);
}
