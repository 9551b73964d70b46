/** A positive integer setting from the environment (`fallback` when unset or empty); anything else stops the run, naming it. */
export function positiveInt(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${text}"`)
  return n
}

/** A whole number of seconds or more from the environment (0 allowed: none), `fallback` when unset or empty. */
export function nonNegativeInt(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number (0 or more), got "${text}"`)
  return n
}
