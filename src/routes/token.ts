import { Hono } from 'hono'
import type { Deps } from '../broker.js'
import { invalidRequest, OAuthError } from '../errors.js'
import { JWT_BEARER_GRANT, redeemJwtBearer } from '../exchange/jwt-bearer.js'
import { exchangeToken, MULTI_VALUED, TOKEN_EXCHANGE_GRANT, type ExchangeResponse, type GrantRequest } from '../exchange/token-exchange.js'
import { parseForm, type FormParams } from '../http/form.js'
import { noStore } from '../http/middleware.js'
import { authorizationCodeFlowEnabled } from '../authorize/request.js'
import { AUTHORIZATION_CODE_GRANT, redeemAuthorizationCode, redeemRefreshToken, REFRESH_TOKEN_GRANT, type ClientTokenResponse } from '../authorize/token-grants.js'
import { identify } from '../http/access-log.js'
import { remoteAddress } from '../http/rate-limit.js'

type Grant = (deps: Deps, form: FormParams, request: GrantRequest) => Promise<ExchangeResponse | ClientTokenResponse>

/**
 * One handler per grant type, registered by its name or URN: the jwt-bearer grant only when an
 * enterprise IdP is configured; authorization_code and refresh_token only when the
 * authorization-code flow is served (an OAuth client workload and a sign-in are configured).
 */
export function grantHandlers(deps: Pick<Deps, 'idJags' | 'config'>): Record<string, Grant> {
  return {
    [TOKEN_EXCHANGE_GRANT]: exchangeToken,
    ...(deps.idJags.enabled ? { [JWT_BEARER_GRANT]: redeemJwtBearer } : {}),
    ...(authorizationCodeFlowEnabled(deps.config) ? { [AUTHORIZATION_CODE_GRANT]: redeemAuthorizationCode, [REFRESH_TOKEN_GRANT]: redeemRefreshToken } : {}),
  }
}

/** POST /token — the token endpoint (RFC 6749 §3.2). */
export function tokenRoutes(deps: Deps) {
  return new Hono().post('/token', noStore(), async (c) => {
    const form = await parseForm(c, MULTI_VALUED)
    const grantType = form.get('grant_type')?.[0]
    if (!grantType) throw invalidRequest('"grant_type" is required')
    // Per request: the catalog (an enterprise IdP, an OAuth client workload) may change at run time.
    const grant = grantHandlers(deps)[grantType]
    if (!grant) throw new OAuthError('unsupported_grant_type', 400, 'grant_type is not supported')
    const response = await grant(deps, form, {
      dpop: c.req.header('dpop'),
      callerAddress: remoteAddress(c),
      authorization: c.req.header('authorization'),
      identified: (workloadId) => identify(c, `workload:${workloadId}`),
    })
    deps.metrics.tokensIssued.inc({ token_type: response.token_type })
    // RFC 9449 §8: with nonces on, a DPoP response carries the next nonce to use.
    return c.json(response, 200, response.token_type === 'DPoP' ? deps.dpop.successHeaders() : {})
  })
}
