/**
 * The one script of the pages: the admin console's live task list (`/admin/console/live`). It
 * listens to the console's Server-Sent Events (`/admin/console/events`, HTML Living Standard
 * §9.2) and puts each task that opened or changed at the top of the table, filling cells with
 * `textContent` only (nothing it receives becomes markup). Served from 'self' like the stylesheet;
 * the page it enhances is complete without it (a reload shows the same list).
 */
import { createHash } from 'node:crypto'

/** Where the script is served; the live page's CSP (`script-src 'self'`) allows only the broker's own. */
export const CONSOLE_LIVE_JS_PATH = '/assets/console-live.js'

/** Rows the live table keeps: as many as the page shows. */
export const LIVE_ROWS = 100

export const CONSOLE_LIVE_JS = `'use strict';
(function () {
  var table = document.getElementById('live-tasks');
  var state = document.getElementById('live-state');
  if (!table || !state || typeof EventSource === 'undefined') return;
  var body = table.tBodies[0];
  var columns = ['task', 'user', 'workload', 'purpose', 'status', 'ends'];
  var source = new EventSource(table.getAttribute('data-events'));
  source.addEventListener('open', function () {
    state.textContent = 'Live: tasks appear here as they open and change.';
  });
  source.addEventListener('error', function () {
    state.textContent = 'Live updates are paused: reload the page to see the latest.';
  });
  source.addEventListener('task', function (event) {
    var task = JSON.parse(event.data);
    var id = 'task-' + task.task_id;
    var row = document.getElementById(id);
    if (row) row.parentNode.removeChild(row);
    row = document.createElement('tr');
    row.id = id;
    columns.forEach(function (column) {
      var cell = document.createElement('td');
      if (column === 'task') {
        var link = document.createElement('a');
        link.href = task.href;
        link.textContent = task.task_id;
        cell.className = 'url';
        cell.appendChild(link);
      } else if (column === 'status') {
        var badge = document.createElement('span');
        badge.className = 'status status-' + String(task.status).replace(/[^a-z_-]/gi, '');
        badge.textContent = task.status;
        cell.className = 'nowrap';
        cell.appendChild(badge);
      } else {
        cell.textContent = task[column];
      }
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > ${LIVE_ROWS}) body.deleteRow(body.rows.length - 1);
    var empty = document.getElementById('live-empty');
    if (empty) empty.parentNode.removeChild(empty);
  });
})();
`

/** A digest of the script: its URL's `?v=`, so it may be cached as immutable. */
export const CONSOLE_LIVE_JS_VERSION = createHash('sha256').update(CONSOLE_LIVE_JS).digest('base64url').slice(0, 16)
