(() => {
  const problems = [];
  const visible = el => !el.closest('details:not([open])') && el.getClientRects().length > 0;
  const where = el => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      const sec = e.id ? '#' + e.id : '';
      parts.unshift(e.tagName.toLowerCase() + sec);
      if (e.id) break;
    }
    return parts.join(' > ');
  };
  const say = (el, what) => { if (problems.length < 40) problems.push(`${where(el)}: ${what}`); };
  const snippet = s => JSON.stringify(s.trim().replace(/\s+/g, ' ').slice(0, 50));
  // 1. The page itself does not scroll sideways.
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1) {
    problems.push(`the page is ${doc.scrollWidth} px wide in a ${doc.clientWidth} px window`);
    // Name the outermost boxes that stick out (not those inside a box that scrolls).
    const scroller = e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
    for (const el of document.querySelectorAll('body *')) {
      if (el.getBoundingClientRect().right <= doc.clientWidth + 1 || !visible(el)) continue;
      const p = el.parentElement;
      if (p && p.getBoundingClientRect().right > doc.clientWidth + 1) continue;
      let inside = false;
      for (let a = p; a && a !== document.body; a = a.parentElement) if (scroller(a)) inside = true;
      if (!inside) say(el, `reaches ${Math.round(el.getBoundingClientRect().right)} px`);
    }
  }
  // 2. Every mark of a chart lies inside its chart (an inline SVG clips what lies outside).
  for (const svg of document.querySelectorAll('svg')) {
    if (!visible(svg) || svg.parentElement.closest('svg')) continue;
    const box = svg.getBoundingClientRect();
    for (const m of svg.querySelectorAll('text, circle, ellipse, rect, line, polyline, polygon, path')) {
      if (m.closest('defs, marker, clipPath')) continue;
      const r = m.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      const out = Math.max(box.left - r.left, r.right - box.right, box.top - r.top, r.bottom - box.bottom);
      if (out > 1.5)
        say(m, `${m.tagName} ${m.tagName === 'text' ? snippet(m.textContent) + ' ' : ''}reaches ${out.toFixed(1)} px outside its chart`);
    }
  }
  // 3. Nothing overflows a table cell or its box (the innermost box is named), and no box
  //    clips its text.
  const wide = [];
  for (const el of document.querySelectorAll('main *')) {
    if (el.closest('svg') || !visible(el)) continue;
    const cs = getComputedStyle(el);
    const tag = el.tagName;
    const scrolls = ['auto', 'scroll'].includes(cs.overflowX);
    const block = !cs.display.startsWith('inline') && cs.display !== 'contents' && el.clientWidth > 0;
    if ((tag === 'TD' || tag === 'TH') && el.scrollWidth > el.clientWidth + 1)
      say(el, `${snippet(el.textContent)} is ${el.scrollWidth} px wide in a ${el.clientWidth} px cell`);
    else if (!scrolls && ['hidden', 'clip'].includes(cs.overflowX) && el.scrollWidth > el.clientWidth + 1)
      say(el, `clips ${snippet(el.textContent)} (${el.scrollWidth} px in ${el.clientWidth} px)`);
    else if (cs.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth + 1)
      say(el, `cuts ${snippet(el.textContent)} short with an ellipsis`);
    else if (block && !scrolls && cs.overflowX === 'visible' && tag !== 'TABLE' &&
             !el.closest('td, th') && el.scrollWidth > el.clientWidth + 1)
      wide.push(el);
  }
  for (const el of wide)
    if (!wide.some(inner => inner !== el && el.contains(inner)))
      say(el, `its content (${snippet(el.textContent)}) is ${el.scrollWidth} px wide in a ${el.clientWidth} px box`);
  // 4. Short cells stay on one line; no word breaks inside itself.
  const lines = node => {
    const range = document.createRange();
    range.selectNodeContents(node);
    const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    return tops.size;
  };
  for (const cell of document.querySelectorAll('td, th')) {
    if (!visible(cell)) continue;
    const text = cell.textContent.trim();
    if (text.length > 0 && text.length <= 14 && lines(cell) > 1)
      say(cell, `${snippet(text)} wraps onto ${lines(cell)} lines`);
  }
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  const word = /[A-Za-z0-9_~.]{2,}/g;
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const host = t.parentElement;
    if (!host || host.closest('svg, pre, script, style') || !visible(host)) continue;
    for (const m of t.data.matchAll(word)) {
      const range = document.createRange();
      range.setStart(t, m.index);
      range.setEnd(t, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (tops.size > 1) say(host, `the word ${snippet(m[0])} breaks across lines`);
    }
  }
  // 5. Every table column holds at least one value.
  const empty = cell => ['', '—', '–', '-', 'n/a'].includes(cell.textContent.trim()) &&
    ![...cell.querySelectorAll('*')].some(e => !['BR', 'WBR'].includes(e.tagName));
  for (const table of document.querySelectorAll('table')) {
    if (!visible(table) || table.querySelector('[colspan], [rowspan]')) continue;
    const head = table.querySelector('thead tr');
    const rows = [...table.querySelectorAll('tbody tr')];
    if (!head || rows.length === 0) continue;
    [...head.children].forEach((th, j) => {
      if (rows.every(r => !r.children[j] || empty(r.children[j])))
        say(table, `the column ${snippet(th.textContent)} has no value in any of its ${rows.length} rows`);
    });
  }
  return JSON.stringify(problems);
})()
