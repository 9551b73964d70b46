import { VerifierError } from './errors.js'
import type { TaskTokenVerifier } from './verifier.js'

/** How an SDK spells each rejection: its own error classes are the only ones its gate answers with a challenge. */
export interface SdkErrors {
  invalidToken(description: string): Error
  insufficientScope(description: string): Error
  invalidRequest(description: string): Error
}

/**
 * The part both MCP SDK adapters share: their `requireBearerAuth` gates are Bearer-only, so a
 * verifier that requires DPoP cannot sit behind them (RFC 9449 §7.2), and every rejection must
 * be rethrown as the SDK's own error — any other exception becomes a 500 without a challenge.
 */
export function bearerOnlyVerify<T>(verifier: TaskTokenVerifier, sdk: string, instead: string, errors: SdkErrors): (token: string) => Promise<T> {
  if (verifier.dpop === 'required') {
    throw new TypeError(`"dpop" is 'required' but the ${sdk} requireBearerAuth accepts only Bearer tokens; use ${instead}(verifier) instead`)
  }
  return async (token) => {
    try {
      return (await verifier.verifyAccessToken(token)) as T
    } catch (e) {
      if (!(e instanceof VerifierError)) throw errors.invalidToken('token could not be verified')
      switch (e.code) {
        case 'insufficient_scope':
          throw errors.insufficientScope(e.description)
        case 'invalid_request':
          throw errors.invalidRequest(e.description)
        case 'invalid_token':
        case 'invalid_dpop_proof':
          throw errors.invalidToken(e.description)
      }
    }
  }
}
