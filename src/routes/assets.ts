/**
 * GET /assets/taskpass.css: the pages' stylesheet (src/pages/styles.ts). Public and static. The
 * pages link it with a digest in the query (`?v=`), so it is cached for a year as immutable; the
 * ETag serves a browser that revalidates anyway.
 */
import { Hono } from 'hono'
import { PAGES_CSS, PAGES_CSS_PATH, PAGES_CSS_VERSION } from '../pages/styles.js'

const ETAG = `"${PAGES_CSS_VERSION}"`

/** The pages' static assets (the one stylesheet), mounted with `app.route('/', pageAssets())`. */
export function pageAssets() {
  return new Hono().get(PAGES_CSS_PATH, (c) => {
    const headers = {
      'Cache-Control': 'public, max-age=31536000, immutable',
      ETag: ETAG,
      'X-Content-Type-Options': 'nosniff',
    }
    const match = c.req.header('if-none-match')
    if (match !== undefined && match.split(',').some((tag) => tag.trim().replace(/^W\//, '') === ETAG)) return c.body(null, 304, headers)
    return c.body(PAGES_CSS, 200, { ...headers, 'Content-Type': 'text/css; charset=utf-8' })
  })
}
