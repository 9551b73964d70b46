/**
 * The broker's clock is the verifier kit's: one `Clock` type for both sides, so a clock injected
 * into the broker in a test can drive a kit verifier too. The only place that reads the wall
 * clock is `systemClock`.
 */
export { createFixedClock, systemClock, type Clock, type FixedClock } from '@taskpass/verifier/clock'
