/**
 * taskpass as a library: build the broker in-process (tests, embedding, benchmarks).
 * MCP servers import the verifier kit from `@taskpass/verifier` instead.
 */
export { createApp, type App } from './app.js'
export { argon2Hasher, createBroker, type Deps } from './broker.js'
export { createFixedClock, systemClock, type Clock, type FixedClock } from './clock.js'
export { ConfigError, parseConfig, type Config, type ConfigInput } from './config.js'
export { OAuthError, type OAuthErrorCode } from './errors.js'
export { createJsonLogger, createPinoLogger, silentLogger, type Logger, type PinoLogger } from './logger.js'
