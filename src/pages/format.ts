/**
 * Words for times on the pages: a task's lifetime ("1 hour 30 minutes") and when it ends
 * ("until 14:05 UTC (in 12 min)"). Times are epoch seconds passed in; nothing here reads a clock.
 */

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`
}

/** A duration in seconds as words, largest units first: 900 → "15 minutes", 5400 → "1 hour 30 minutes". */
export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds))
  const parts: string[] = []
  const days = Math.floor(s / 86_400)
  const hours = Math.floor((s % 86_400) / 3600)
  const minutes = Math.floor((s % 3600) / 60)
  const rest = s % 60
  if (days) parts.push(plural(days, 'day'))
  if (hours) parts.push(plural(hours, 'hour'))
  if (minutes) parts.push(plural(minutes, 'minute'))
  if (rest || parts.length === 0) parts.push(plural(rest, 'second'))
  return parts.join(' ')
}

const pad = (n: number) => String(n).padStart(2, '0')

/** An instant as "HH:MM UTC", with the date in front when it is not on `now`'s UTC day. */
export function utcTime(at: number, now: number): string {
  const d = new Date(at * 1000)
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`
  const sameDay = d.toISOString().slice(0, 10) === new Date(now * 1000).toISOString().slice(0, 10)
  return sameDay ? time : `${d.toISOString().slice(0, 10)} ${time}`
}

/** How far `at` is from `now`: "in 12 min", "in 3 h", "in 2 days", or "5 min ago". */
export function relativeTime(at: number, now: number): string {
  const delta = at - now
  // Rounded up ahead and down behind, so a task ending in 30 s still reads "in 1 min", not "in 0 min".
  const minutes = delta >= 0 ? Math.ceil(delta / 60) : Math.floor(-delta / 60)
  const words = minutes < 120 ? `${minutes} min` : minutes < 48 * 60 ? `${Math.floor(minutes / 60)} h` : `${Math.floor(minutes / 1440)} days`
  return delta >= 0 ? `in ${words}` : `${words} ago`
}

/** "until 14:05 UTC (in 12 min)", or "ended 13:50 UTC (3 min ago)" once past. */
export function untilText(expiresAt: number, now: number): string {
  return expiresAt > now
    ? `until ${utcTime(expiresAt, now)} (${relativeTime(expiresAt, now)})`
    : `ended ${utcTime(expiresAt, now)} (${relativeTime(expiresAt, now)})`
}

/**
 * A link or form target the pages may render: a same-origin path or an http(s) URL. Anything else
 * (`javascript:`, `data:`, a protocol-relative `//host`) is a bug in the caller, refused loudly
 * rather than rendered — escaping makes markup safe, not URL schemes.
 */
export function safeUrl(url: string, what: string): string {
  if (/^\/(?![/\\])/.test(url)) return url
  if (/^https?:\/\//i.test(url) && URL.canParse(url)) return url
  throw new TypeError(`${what} must be a path or an http(s) URL`)
}
