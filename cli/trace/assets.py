"""The trace page's inline style and script (cli.trace.html puts them in the page).

The script reads the JSON data element, draws the scheduler's row (its events as marks)
and one row per deploy on a shared time axis, a failed deploy's reason on a line of its
own under its bar (wrapped, and pinned beside the instance names so that it stays in view
however the timeline is zoomed or scrolled), and adds zoom (buttons, ctrl + wheel at the
pointer), hover and click details, the failures list's links to their rows, and the
outcome and instance filters. It writes text only through `textContent`, never markup.
Over 400 lines with the page's style: one page's assets, kept together on purpose.
"""

STYLE = """
:root { --label: 230px; --track-w: 900px; font: 13px/1.35 system-ui, sans-serif; color: #1d232a; }
body { margin: 0; background: #fbfbfc; }
header { padding: 10px 16px 4px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.outcome { font-size: 12px; padding: 2px 8px; border-radius: 9px; color: #fff; vertical-align: 2px;
  text-transform: uppercase; background: #6b7280; }
.outcome.succeeded { background: #2f8a3b; } .outcome.rolled_back { background: #b7791f; }
.outcome.failed { background: #c53030; } .outcome.running { background: #2b6cb0; }
.facts { margin: 2px 0; }
.legend { margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; }
.key i { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: -1px;
  border-radius: 2px; }
.key i.gap, .gap {
  background: repeating-linear-gradient(45deg, #e45756 0 3px, transparent 3px 6px); }
.key i.resumed-key { border-left: 3px solid #111; background: #ddd; }
.key i.error-key { outline: 2px solid #b00020; background: #ddd; }
.controls { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; padding: 6px 16px;
  border-top: 1px solid #e3e5e8; border-bottom: 1px solid #e3e5e8; background: #fff; }
.controls label { white-space: nowrap; } .count { color: #6b7280; }
.controls button { min-width: 30px; font-size: 14px; }
#find { width: 200px; } #shown { color: #6b7280; }
#timeline { overflow: auto; max-height: calc(100vh - 150px); position: relative; background: #fff; }
#axis { position: sticky; top: 0; z-index: 3; height: 20px; display: flex; background: #fff;
  border-bottom: 1px solid #d5d8dc; }
#axis .corner { position: sticky; left: 0; width: var(--label); flex: none; background: #fff;
  z-index: 4; font-size: 11px; color: #6b7280; padding-left: 6px; line-height: 20px; }
#axis .ticks { position: relative; width: var(--track-w); flex: none; overflow: hidden; }
.tick { position: absolute; top: 0; height: 100%; border-left: 1px solid #c9ced4; padding-left: 3px;
  font-size: 11px; color: #4b5563; white-space: nowrap; line-height: 20px; }
.row { display: flex; flex-wrap: wrap; align-items: center; min-height: 19px;
  border-bottom: 1px solid #f0f1f3; }
.row:hover { background: #f5f8ff; }
.label { position: sticky; left: 0; z-index: 2; width: var(--label); flex: none;
  box-sizing: border-box; padding: 0 6px; background-color: #fff; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; font: 12px ui-monospace, monospace; cursor: pointer; }
.dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px;
  background: #6b7280; }
.row.succeeded .dot { background: #2f8a3b; } .row.rolled_back .dot { background: #d69e2e; }
.row.failed .dot { background: #c53030; } .row.running .dot { background: #2b6cb0; }
.track { position: relative; height: 13px; width: var(--track-w); flex: none; }
.seg { position: absolute; top: 0; height: 100%; min-width: 2px; box-sizing: border-box;
  cursor: pointer; }
.seg:hover, .seg.picked { filter: brightness(0.85); outline: 1px solid #111; z-index: 1; }
.seg.skipped { opacity: 0.35; }
.seg.resumed { border-left: 3px solid #111; }
.seg.interrupted { background: #111 !important; min-width: 3px; }
.seg.error { outline: 2px solid #b00020; z-index: 1; }
.seg.open { border-right: 2px dashed #111; }
.track .gap { position: absolute; top: 2px; height: 9px; cursor: pointer; }
.reason { position: sticky; left: var(--label); margin-left: var(--label); box-sizing: border-box;
  width: calc(var(--view-w) - var(--label) - 12px); padding: 1px 6px 4px; font-size: 12px;
  color: #9b1c1c; white-space: normal; overflow-wrap: anywhere; cursor: pointer; }
.row.scheduler { background: #f6f6fb; }
.row.scheduler .label { background-color: #f6f6fb; color: #4b5563; }
.event { position: absolute; top: 0; height: 100%; width: 2px; margin-left: -1px;
  background: #4b5563; cursor: pointer; }
.event b { position: absolute; top: 0; left: 3px; font: bold 10px/13px ui-monospace, monospace;
  color: #1d232a; pointer-events: none; }
.event.end b { left: auto; right: 3px; }
.event.rollout_stopped, .event.reverted, .event.held { background: #c53030; }
.event.step_reached, .event.promoted { background: #2b6cb0; }
.event.rollout_complete { background: #2f8a3b; }
.event.wave { background: #9ca3af; }
#failures { margin: 6px 0 4px; padding: 5px 10px; border-left: 4px solid #c53030;
  background: #fff5f5; max-height: 22vh; overflow: auto; }
#failures h2 { font-size: 13px; margin: 0 0 3px; color: #9b1c1c; }
#failures ul { margin: 0; padding-left: 18px; }
#failures li { margin: 1px 0; overflow-wrap: anywhere; }
#failures .failure { font: 12px ui-monospace, monospace; border: none; background: none;
  color: #9b1c1c; text-decoration: underline; cursor: pointer; padding: 0; }
#failures .what { color: #6b7280; }
#tip { position: fixed; z-index: 10; max-width: 460px; padding: 6px 8px; background: #1d232a;
  color: #fff; border-radius: 4px; font-size: 12px; pointer-events: none; white-space: pre-wrap; }
#details { position: fixed; right: 12px; bottom: 12px; z-index: 9; width: 440px; max-height: 50vh;
  overflow: auto; background: #fff; border: 1px solid #c9ced4; border-radius: 6px;
  box-shadow: 0 4px 16px rgba(0,0,0,.15); padding: 8px 12px; }
#details dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0; }
#details dt { color: #6b7280; } #details dd { margin: 0; word-break: break-all; }
#details .close { float: right; }
"""

SCRIPT = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('trace-data').textContent);
  var timeline = document.getElementById('timeline');
  var rowsEl = document.getElementById('rows');
  var axis = document.getElementById('axis');
  var tip = document.getElementById('tip');
  var details = document.getElementById('details');
  var total = data.total;
  var zoom = 1;
  var FLAG_SKIPPED = 1, FLAG_RESUMED = 2, FLAG_INTERRUPTED = 4;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function pct(ms) { return (ms / total * 100) + '%'; }
  function pad(n) { return n < 10 ? '0' + n : String(n); }
  function duration(ms) {
    if (ms < 1000) { return Math.round(ms) + 'ms'; }
    var s = ms / 1000;
    if (s < 10) { return s.toFixed(1) + 's'; }
    if (s < 60) { return Math.round(s) + 's'; }
    var whole = Math.round(s), m = Math.floor(whole / 60);
    if (m < 60) { return m + 'm' + pad(whole % 60) + 's'; }
    return Math.floor(m / 60) + 'h' + pad(m % 60) + 'm';
  }
  function when(ms) {
    return new Date(data.originMs + ms).toISOString().replace('T', ' ').replace('Z', ' UTC');
  }
  function segEnd(s) { return s[2] < 0 ? data.now : s[2]; }

  var rowEls = [];
  var fragment = document.createDocumentFragment();
  data.rows.forEach(function (r, ri) {
    var outcome = r[2], segments = r[7], gaps = r[8];
    var row = el('div', 'row ' + outcome);
    row.setAttribute('data-instance', r[0]);
    row.setAttribute('data-deploy', r[1]);
    row.setAttribute('data-outcome', outcome);
    row.setAttribute('data-row', String(ri));
    var label = el('div', 'label');
    label.setAttribute('data-row', String(ri));
    label.appendChild(el('span', 'dot'));
    label.appendChild(el('span', 'name', r[0]));
    var track = el('div', 'track');
    gaps.forEach(function (g, gi) {
      var gap = el('div', 'gap');
      gap.style.left = pct(g[0]);
      gap.style.width = pct(Math.max(g[1] - g[0], 0));
      gap.setAttribute('data-row', String(ri));
      gap.setAttribute('data-gap', String(gi));
      track.appendChild(gap);
    });
    segments.forEach(function (s, si) {
      var seg = el('div', 'seg');
      var flags = s[4];
      seg.style.left = pct(s[1]);
      seg.style.width = pct(Math.max(segEnd(s) - s[1], 0));
      seg.style.background = data.colours[s[0]] || '#999999';
      if (flags & FLAG_SKIPPED) { seg.classList.add('skipped'); }
      if (flags & FLAG_RESUMED) { seg.classList.add('resumed'); }
      if (flags & FLAG_INTERRUPTED) { seg.classList.add('interrupted'); }
      if (s[5] && !(flags & FLAG_INTERRUPTED)) { seg.classList.add('error'); }
      if (s[2] < 0) { seg.classList.add('open'); }
      seg.setAttribute('data-row', String(ri));
      seg.setAttribute('data-seg', String(si));
      track.appendChild(seg);
    });
    row.appendChild(label);
    row.appendChild(track);
    if (r[6]) {
      // On a line of its own, wrapped and pinned beside the names: never past the bar's
      // end, where it used to run off the screen.
      var reason = el('div', 'reason', '✗ ' + r[2].replace('_', ' ') + ': ' + r[6]);
      reason.setAttribute('data-row', String(ri));
      row.appendChild(reason);
    }
    rowEls.push(row);
    fragment.appendChild(row);
  });
  if (data.events.length) {
    var scheduler = el('div', 'row scheduler');
    var schedulerLabel = el('div', 'label');
    schedulerLabel.appendChild(el('span', 'name', 'scheduler'));
    var marks = el('div', 'track');
    data.events.forEach(function (e, ei) {
      // Near the right end the mark's letter goes on its left, or it would be cut off.
      var mark = el('div', 'event ' + e[1] + (e[0] > 0.9 * total ? ' end' : ''));
      mark.style.left = pct(e[0]);
      mark.setAttribute('data-event', String(ei));
      mark.appendChild(el('b', null, data.marks[e[1]] || '?'));
      marks.appendChild(mark);
    });
    scheduler.appendChild(schedulerLabel);
    scheduler.appendChild(marks);
    fragment.insertBefore(scheduler, fragment.firstChild);
  }
  rowsEl.appendChild(fragment);

  var corner = el('div', 'corner', 'instance');
  var ticks = el('div', 'ticks');
  axis.appendChild(corner);
  axis.appendChild(ticks);
  var STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
    3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 144e5, 216e5, 432e5, 864e5];

  function labelWidth() {
    var corner = axis.firstChild;
    return corner ? corner.getBoundingClientRect().width : 230;
  }
  function trackWidth() {
    return Math.max(timeline.clientWidth - labelWidth() - 4, 200) * zoom;
  }
  function drawAxis(width) {
    while (ticks.firstChild) { ticks.removeChild(ticks.firstChild); }
    var step = STEPS[STEPS.length - 1];
    for (var i = 0; i < STEPS.length; i++) {
      if (STEPS[i] / total * width >= 90) { step = STEPS[i]; break; }
    }
    for (var t = 0; t <= total; t += step) {
      var tick = el('div', 'tick', duration(t));
      tick.style.left = pct(t);
      ticks.appendChild(tick);
    }
  }
  function layout(anchor) {
    var before = trackWidth() / zoom;
    var width = trackWidth();
    document.documentElement.style.setProperty('--track-w', width + 'px');
    document.documentElement.style.setProperty('--view-w', timeline.clientWidth + 'px');
    drawAxis(width);
    if (anchor) {
      timeline.scrollLeft = anchor.fraction * width - anchor.offset;
    }
    return before;
  }
  function zoomTo(factor, clientX) {
    var rect = timeline.getBoundingClientRect();
    var offset = (clientX === undefined ? rect.width / 2 : clientX - rect.left) - labelWidth();
    var fraction = (timeline.scrollLeft + offset) / trackWidth();
    zoom = Math.min(Math.max(factor, 1), 500);
    layout({ fraction: fraction, offset: offset });
  }
  document.getElementById('zoom-in').addEventListener('click', function () { zoomTo(zoom * 2); });
  document.getElementById('zoom-out').addEventListener('click', function () { zoomTo(zoom / 2); });
  document.getElementById('zoom-fit').addEventListener('click', function () { zoomTo(1); });
  timeline.addEventListener('wheel', function (event) {
    if (!event.ctrlKey && !event.metaKey) { return; }
    event.preventDefault();
    zoomTo(zoom * (event.deltaY < 0 ? 1.25 : 0.8), event.clientX);
  }, { passive: false });
  window.addEventListener('resize', function () { layout(null); });

  function revision(id) {
    if (!id) { return '(none)'; }
    var label = data.labels[id];
    return label ? label + ' (' + id.slice(0, 12) + ')' : id.slice(0, 12);
  }
  function describe(target) {
    var ei = target.getAttribute('data-event');
    if (ei !== null) {
      var e = data.events[Number(ei)];
      return [['scheduler', e[1].replace(/_/g, ' ')], ['at', when(e[0])], ['what', e[2]]];
    }
    var ri = target.getAttribute('data-row');
    if (ri === null) { return null; }
    var r = data.rows[Number(ri)];
    var lines = [];
    var segIndex = target.getAttribute('data-seg');
    var gapIndex = target.getAttribute('data-gap');
    if (segIndex !== null) {
      var s = r[7][Number(segIndex)];
      var flags = s[4];
      var state = data.states[s[0]] || '?';
      lines.push(['state', state + (flags & FLAG_SKIPPED ? ' (skipped: no load balancer)' : '')]);
      var resumed = flags & FLAG_RESUMED ? ' (resumed by a restarted agent)' : '';
      lines.push(['attempt', String(s[3]) + resumed]);
      lines.push(['start', when(s[1])]);
      lines.push(['end', s[2] < 0 ? 'not yet (in this state now)' : when(s[2])]);
      lines.push(['took', duration(segEnd(s) - s[1])]);
      if (s[5]) { lines.push(['error', s[5]]); }
      (s[7] || []).forEach(function (h) { lines.push(['hook', h]); });
      lines.push(['span id', s[6] || '(none: the agent stopped before ending it)']);
    } else if (gapIndex !== null) {
      var g = r[8][Number(gapIndex)];
      lines.push(['crash gap', 'no agent worked on this deploy']);
      lines.push(['from', when(g[0])]);
      lines.push(['to', when(g[1])]);
      lines.push(['took', duration(g[1] - g[0])]);
    }
    lines.push(['instance', r[0]]);
    lines.push(['deploy', r[1]]);
    lines.push(['outcome', r[2].replace('_', ' ')]);
    if (r[6]) { lines.push(['reason', r[6]]); }
    lines.push(['revision', revision(r[3]) + ' → ' + revision(r[4])]);
    lines.push(['trace id', r[5] || '(unknown)']);
    return lines;
  }

  timeline.addEventListener('mousemove', function (event) {
    var lines = describe(event.target);
    if (!lines || event.target.classList.contains('label')) { tip.hidden = true; return; }
    tip.textContent = lines.slice(0, 6).map(function (l) { return l[0] + ': ' + l[1]; }).join('\n');
    tip.hidden = false;
    var x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var y = event.clientY + 16;
    if (y + tip.offsetHeight > window.innerHeight) { y = event.clientY - tip.offsetHeight - 10; }
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  });
  timeline.addEventListener('mouseleave', function () { tip.hidden = true; });

  var picked = null;
  function showDetails(target) {
    var lines = describe(target);
    if (!lines) { return; }
    if (picked) { picked.classList.remove('picked'); }
    picked = target;
    target.classList.add('picked');
    while (details.firstChild) { details.removeChild(details.firstChild); }
    var close = el('button', 'close', '×');
    close.type = 'button';
    close.setAttribute('aria-label', 'close');
    close.addEventListener('click', function () { details.hidden = true; });
    details.appendChild(close);
    var list = el('dl');
    lines.forEach(function (l) {
      list.appendChild(el('dt', null, l[0]));
      list.appendChild(el('dd', null, l[1]));
    });
    details.appendChild(list);
    details.hidden = false;
  }
  timeline.addEventListener('click', function (event) { showDetails(event.target); });
  document.querySelectorAll('#failures .failure').forEach(function (button) {
    button.addEventListener('click', function () {
      var row = rowEls[Number(button.getAttribute('data-row'))];
      row.hidden = false;
      row.scrollIntoView({ block: 'center' });
      showDetails(row.querySelector('.label'));
    });
  });
  document.addEventListener('keydown', function (event) {
    if (event.key === 'Escape') { details.hidden = true; }
  });

  var find = document.getElementById('find');
  var shown = document.getElementById('shown');
  function applyFilters() {
    var wanted = {};
    document.querySelectorAll('input[name=outcome]').forEach(function (box) {
      wanted[box.value] = box.checked;
    });
    var text = find.value.trim().toLowerCase();
    var count = 0;
    rowEls.forEach(function (row) {
      var visible = wanted[row.getAttribute('data-outcome')] !== false &&
        (!text || row.getAttribute('data-instance').toLowerCase().indexOf(text) >= 0 ||
         row.getAttribute('data-deploy').toLowerCase().indexOf(text) >= 0);
      row.hidden = !visible;
      if (visible) { count += 1; }
    });
    shown.textContent = count + ' of ' + rowEls.length + ' deploys shown';
  }
  document.querySelectorAll('input[name=outcome]').forEach(function (box) {
    box.addEventListener('change', applyFilters);
  });
  find.addEventListener('input', applyFilters);

  layout(null);
  applyFilters();
  document.body.setAttribute('data-ready', 'true');
})();
"""
