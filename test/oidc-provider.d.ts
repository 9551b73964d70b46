/**
 * oidc-provider ships no types; the tests use only its constructor and request handler.
 * (https://github.com/panva/node-oidc-provider, v9)
 */
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http'

  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>)
    callback(): (req: IncomingMessage, res: ServerResponse) => void
  }
}
