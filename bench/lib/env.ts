/** A positive integer setting from the environment (`fallback` when unset or empty); anything else stops the run, naming it. */
export function positiveInt(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const n = Number(text)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${text}"`)
  return n
}
