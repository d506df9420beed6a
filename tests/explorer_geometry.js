// Layout problems of the explorer page as strings (none: []): horizontal overflow, boxes that
// leave the viewport or overlap their siblings, text running off its box. Run by
// tests/test_explorer.py with page.evaluate at each screen width.
() => {
  const visible = (el) => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > innerWidth) problems.push(`page ${doc.scrollWidth} px wide in ${innerWidth}`);
  const groups = ['header', '#login', 'body', 'main', '.toolbar', '#filter', '.pager', '#viewer h2',
                  '#viewer .actions', '.store-grid', '.store-lists', '#detail', '#browser'];
  for (const selector of groups) {
    for (const parent of document.querySelectorAll(selector)) {
      const kids = [...parent.children].filter((el) => visible(el) &&
        !['absolute', 'fixed'].includes(getComputedStyle(el).position) && el.tagName !== 'SCRIPT');
      for (const el of kids) {
        const r = el.getBoundingClientRect();
        if (r.left < -1 || r.right > innerWidth + 1) problems.push(`${selector} > ${el.id || el.className || el.tagName} leaves the viewport (${r.left}..${r.right})`);
      }
      for (let i = 0; i < kids.length; i++) for (let j = i + 1; j < kids.length; j++) {
        const a = kids[i].getBoundingClientRect(), b = kids[j].getBoundingClientRect();
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 1) problems.push(`${selector}: ${kids[i].id || kids[i].tagName} overlaps ${kids[j].id || kids[j].tagName}`);
      }
    }
  }
  // Text that runs off its box (a cut-off header or button label).
  for (const el of document.querySelectorAll('header *, button, label, .pager span, #detail h2')) {
    if (visible(el) && el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflow === 'visible'
        && el.clientWidth > 0 && el.children.length === 0) problems.push(`text overflows ${el.id || el.tagName}: ${el.textContent.slice(0, 30)}`);
  }
  return problems;
}
