/**
 * GET /assets/taskpass.css and /assets/console-live.js: the pages' stylesheet (src/pages/styles.ts)
 * and the console's live-list script (src/pages/console-live.ts). Public and static. The pages
 * link them with a digest in the query (`?v=`), so they are cached for a year as immutable; the
 * ETag serves a browser that revalidates anyway.
 */
import { Hono, type Context } from 'hono'
import { CONSOLE_LIVE_JS, CONSOLE_LIVE_JS_PATH, CONSOLE_LIVE_JS_VERSION } from '../pages/console-live.js'
import { PAGES_CSS, PAGES_CSS_PATH, PAGES_CSS_VERSION } from '../pages/styles.js'

/** One static file: its body, type and version (the ETag). */
function asset(body: string, type: string, version: string) {
  const etag = `"${version}"`
  return (c: Context) => {
    const headers = {
      'Cache-Control': 'public, max-age=31536000, immutable',
      ETag: etag,
      'X-Content-Type-Options': 'nosniff',
    }
    const match = c.req.header('if-none-match')
    if (match !== undefined && match.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag)) return c.body(null, 304, headers)
    return c.body(body, 200, { ...headers, 'Content-Type': type })
  }
}

/** The pages' static assets, mounted with `app.route('/', pageAssets())`. */
export function pageAssets() {
  return new Hono()
    .get(PAGES_CSS_PATH, asset(PAGES_CSS, 'text/css; charset=utf-8', PAGES_CSS_VERSION))
    .get(CONSOLE_LIVE_JS_PATH, asset(CONSOLE_LIVE_JS, 'text/javascript; charset=utf-8', CONSOLE_LIVE_JS_VERSION))
}
