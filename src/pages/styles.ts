/**
 * The pages' one stylesheet, served by `pageAssets` (src/routes/assets.ts) from 'self' — the
 * pages' CSP allows no inline style, no external font and no image. System fonts, a centered
 * card, clear primary/secondary buttons, a warning that stands out; dark mode follows the system.
 */
import { createHash } from 'node:crypto'

/** Where the stylesheet is served; the CSP's `style-src 'self'` allows only this. */
export const PAGES_CSS_PATH = '/assets/taskpass.css'

export const PAGES_CSS = `
:root {
  color-scheme: light dark;
  --bg: #f4f5f7; --card: #fff; --text: #1b1f24; --muted: #5b6572; --border: #d5d9df;
  --primary: #1f5fbf; --primary-text: #fff; --danger: #b42318;
  --warn-bg: #fff4d6; --warn-border: #d99a00; --warn-text: #4d3800;
  --error-bg: #fde8e7; --error-border: #d64541; --notice-bg: #e6f0fd; --notice-border: #5b8def;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15181c; --card: #1f2329; --text: #e7eaee; --muted: #9aa4b1; --border: #3a414b;
    --primary: #4d8ef0; --primary-text: #0b1220; --danger: #f07b72;
    --warn-bg: #3b2f0c; --warn-border: #d99a00; --warn-text: #ffe6a6;
    --error-bg: #3d1a19; --error-border: #d64541; --notice-bg: #172a45; --notice-border: #5b8def;
  }
}
*, *::before, *::after { box-sizing: border-box; }
html { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; font-size: 16px; line-height: 1.5; }
body { margin: 0; min-height: 100vh; background: var(--bg); color: var(--text); display: flex; align-items: flex-start; justify-content: center; padding: 2rem 1rem; }
.card { width: 100%; max-width: 34rem; background: var(--card); border: 1px solid var(--border); border-radius: 12px; padding: 1.75rem 2rem; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.card.wide { max-width: 68rem; }
/* Below 60rem the wide card gives up some padding so the seven columns of the task table fit a 900px window. */
@media (max-width: 60rem) { .card.wide { padding: 1.5rem 1.25rem; } }
.brand { margin: 0 0 1rem; font-weight: 700; letter-spacing: .02em; color: var(--muted); font-size: .875rem; text-transform: uppercase; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 .5rem; overflow-wrap: anywhere; }
p { margin: .5rem 0; }
a { color: var(--primary); }
.lead { font-size: 1.05rem; }
.muted { color: var(--muted); }
.hosts { display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1rem; margin: 1rem 0; padding: .85rem 1rem; border: 1px solid var(--border); border-radius: 8px; }
.hosts dt { color: var(--muted); }
.hosts dd { margin: 0; min-width: 0; }
.host { display: block; font-size: 1.15rem; overflow-wrap: anywhere; }
.url, .resource { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; overflow-wrap: anywhere; }
.url { display: block; color: var(--muted); }
.warning, .error, .notice { padding: .75rem 1rem; border-radius: 8px; border: 1px solid; border-left-width: 6px; }
.warning { background: var(--warn-bg); border-color: var(--warn-border); color: var(--warn-text); }
.error { background: var(--error-bg); border-color: var(--error-border); }
.notice { background: var(--notice-bg); border-color: var(--notice-border); }
form.stack { display: flex; flex-direction: column; gap: .5rem; margin-top: 1rem; }
form.inline { display: flex; align-items: center; gap: .5rem; margin: 0; flex-wrap: wrap; }
fieldset { border: 1px solid var(--border); border-radius: 8px; margin: 0; padding: .5rem 1rem .75rem; }
legend { font-weight: 600; padding: 0 .25rem; }
label { font-weight: 600; }
label.check { display: flex; align-items: center; gap: .5rem; font-weight: 400; padding: .15rem 0; overflow-wrap: anywhere; }
input[type=text], input[type=password], select { font: inherit; color: inherit; background: var(--card); width: 100%; padding: .5rem .65rem; border: 1px solid var(--border); border-radius: 6px; }
input[type=checkbox] { width: 1.1rem; height: 1.1rem; margin: 0; flex: none; }
input:focus-visible, select:focus-visible, button:focus-visible, a:focus-visible { outline: 3px solid var(--primary); outline-offset: 2px; }
.actions { display: flex; gap: .75rem; margin-top: .75rem; flex-wrap: wrap; }
button, a.button { font: inherit; font-weight: 600; display: inline-block; white-space: nowrap; text-align: center; text-decoration: none; cursor: pointer; padding: .55rem 1.2rem; border-radius: 6px; border: 1px solid var(--primary); }
.primary { background: var(--primary); color: var(--primary-text); }
.secondary { background: transparent; color: var(--primary); }
.danger { background: transparent; color: var(--danger); border-color: var(--danger); padding: .3rem .8rem; }
.primary:hover { filter: brightness(1.1); }
.secondary:hover, .danger:hover { background: var(--bg); }
.idps { list-style: none; padding: 0; margin: 1rem 0; display: flex; flex-direction: column; gap: .5rem; }
.idps a.button { display: block; }
.header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; flex-wrap: wrap; }
.table { overflow-x: auto; margin-top: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .925rem; }
th, td { text-align: left; vertical-align: top; padding: .5rem .6rem; border-bottom: 1px solid var(--border); overflow-wrap: break-word; }
td.nowrap, th { white-space: nowrap; }
th { color: var(--muted); font-weight: 600; }
ul.access { list-style: none; margin: 0; padding: 0; min-width: 11rem; }
ul.access li + li { margin-top: .4rem; }
ul.access .resource { display: block; }
.status { font-weight: 600; }
.status-active { color: #1a7f37; }
.status-pending_approval { color: var(--warn-border); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.console-nav { display: flex; flex-wrap: wrap; gap: 1rem; margin: .5rem 0 1rem; }
form.filters input[type=text], form.filters select { width: auto; max-width: 18rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1rem; margin: 1rem 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
`

/**
 * A digest of the stylesheet, which the pages put in the link's query: the route ignores it, but a
 * browser keys its cache on it, so the stylesheet can be cached for a year and a release that
 * changes it is still fetched at once.
 */
export const PAGES_CSS_VERSION = createHash('sha256').update(PAGES_CSS).digest('base64url').slice(0, 16)
