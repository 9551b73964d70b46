/**
 * A headless Chromium for tests that need a real browser (the pages' CSP, form posts, redirects
 * after a POST): Debian's `/usr/bin/chromium` driven by playwright-core, no browser download.
 * `.ci/run` installs the package when it is missing. Pages it opens must be served on 127.0.0.1;
 * the flags below keep Chromium itself from reaching any other address (no component updates,
 * no sync, no background fetches, no QUIC probing).
 */
import { existsSync } from 'node:fs'
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface LaunchedBrowser {
  browser: Browser
  /** Closes the browser and removes its profile. */
  close(): Promise<void>
}

/**
 * Launches Chromium with a fresh, empty profile. Playwright refuses `--user-data-dir` among the
 * args of `launch()` (it would be `launchPersistentContext`, which has no `Browser` and no
 * separate contexts); `launch()` itself starts Chromium with `--user-data-dir` set to a new temp
 * directory, which is the fresh profile wanted, and deletes it on close (as it does its
 * artifacts directory).
 */
export async function launchBrowser(): Promise<LaunchedBrowser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)`)
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 })
  return { browser, close: () => browser.close() }
}

/**
 * Everything a page reported as broken: console errors and warnings (CSP violations are console
 * errors), uncaught page errors. Left out: the "failed to load" of the document itself (an
 * error page's 4xx is deliberate) and of the browser's own request for `/favicon.ico`, which the
 * broker does not serve and the page never asked for.
 */
export function watchProblems(page: Page): string[] {
  const problems: string[] = []
  page.on('console', (msg: ConsoleMessage) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return
    const at = msg.location().url
    if (msg.text().startsWith('Failed to load resource') && URL.canParse(at) && (at === page.url() || new URL(at).pathname === '/favicon.ico')) return
    problems.push(`console.${msg.type()}: ${msg.text()}${at ? ` (${at})` : ''}`)
  })
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`))
  return problems
}
