// dangjian-qa front end: vanilla ES2020, no dependencies, no remote assets.
'use strict';
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const MODE_LABELS = { hybrid: '混合', dense: '语义', lexical: '关键词' };
  const ANSWER_MODE_LABELS = { generate: '生成', extract: '摘编' };
  const TOP_K_CHOICES = [5, 10, 20, 50];
  // The server's limits (GET /api/config); these defaults only cover the moment before it answers.
  const config = { modes: ['hybrid'], default_mode: 'hybrid', max_top_k: 5, default_top_k: 5, max_query_chars: 500 };
  const KEY_STORE = 'dangjian-qa.apiKey';
  const LAST_SEARCH = 'dangjian-qa.lastSearch';
  const DOC_PAGE_SIZE = 20;
  const state = {
    seq: 0, renderedKey: null, searchStatus: null,
    collections: [], // [{name, documents, passages}] from /api/health and /api/documents
    docs: { collection: '', q: '', sort: '-added', page: 1 },
  };

  // ---------- DOM helpers (text is always inserted as text nodes) ----------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'hidden') node.hidden = true;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false || c === '') continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const reduceMotion = () => window.matchMedia('(prefers-reduced-motion: reduce)').matches;
  const safeId = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, '_');
  const docUrl = (docId, pid) => '/?' + new URLSearchParams(pid ? { doc: docId, p: pid } : { doc: docId });
  const searchUrl = (q, mode, k, c) => '/?' + new URLSearchParams({ q, mode, k: String(k), ...(c ? { c } : {}) });

  function fmtDate(iso) {
    const d = new Date(iso);
    if (!iso || Number.isNaN(d.getTime())) return iso || '';
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(message, status, code) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, { method = 'GET', body, headers = {} } = {}) {
    const opts = { method, headers: { Accept: 'application/json', ...headers } };
    // A server started with DJQA_READ_REQUIRES_KEY wants the key on reads too.
    const storedKey = sessionStorage.getItem(KEY_STORE);
    if (storedKey && !opts.headers['X-API-Key']) opts.headers['X-API-Key'] = storedKey;
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers['Content-Type'] = 'application/json';
    }
    let res;
    try { res = await fetch(path, opts); } catch (_) {
      throw new ApiError('无法连接服务，请检查网络或稍后重试', 0, 'network');
    }
    let data = null;
    try { data = await res.json(); } catch (_) { /* non-JSON body */ }
    if (!res.ok) {
      const msg = (data && data.error && data.error.message) || `请求失败（HTTP ${res.status}）`;
      throw new ApiError(msg, res.status, data && data.error && data.error.code);
    }
    if (data === null) throw new ApiError('服务返回了无法识别的数据', res.status, 'bad_response');
    return data;
  }

  // ---------- status area ----------
  function setStatus(text, kind = 'info', busy = false) {
    const s = $('#status');
    s.className = `status status-${kind}`;
    s.replaceChildren();
    if (!text) return;
    if (busy) s.append(el('span', { class: 'spinner', 'aria-hidden': 'true' }));
    s.append(el('span', {}, text));
  }

  function setBusy(busy) {
    $('#search-btn').disabled = busy;
    $('#results').setAttribute('aria-busy', String(busy));
  }

  function setSearchStatus(text, kind) {
    state.searchStatus = [text, kind];
    setStatus(text, kind);
  }

  // ---------- routing ----------
  function readParams() {
    const p = new URLSearchParams(location.search);
    const k = Number.parseInt(p.get('k') || '', 10);
    return {
      view: p.get('view'), doc: p.get('doc'), pid: p.get('p'),
      q: (p.get('q') || '').trim(),
      mode: config.modes.includes(p.get('mode')) ? p.get('mode') : config.default_mode,
      k: k >= 1 && k <= config.max_top_k ? k : config.default_top_k,
      c: (p.get('c') || '').trim(), // the collection a search is scoped to; '' = every collection
    };
  }

  function showView(name) {
    $('#search-panel').hidden = name !== 'search';
    $('#search-view').hidden = name !== 'search';
    $('#doc-view').hidden = name !== 'doc';
    $('#manage-view').hidden = name !== 'manage';
    $('#nav-search').toggleAttribute('aria-current', name === 'search');
    $('#nav-manage').toggleAttribute('aria-current', name === 'manage');
  }

  function route() {
    const p = readParams();
    if (p.view === 'manage') return showManage();
    if (p.doc) return showDoc(p.doc, p.pid);
    showView('search');
    applyControls(p);
    if (!p.q) {
      state.seq++; state.renderedKey = null; $('#answer').hidden = true;
      $('#results').replaceChildren(); setStatus('');
      document.title = '党建问答 · 卫健系统党建文献检索';
    } else if (state.renderedKey === location.search && state.searchStatus) {
      setStatus(...state.searchStatus); // returning from the document view: keep rendered results
    } else {
      runSearch(p);
    }
  }

  function navigate(url) {
    history.pushState(null, '', url);
    route();
    if (!new URLSearchParams(location.search).get('p')) window.scrollTo(0, 0);
  }

  function onNavClick(e) {
    const a = e.target.closest('a[data-nav]');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(a.getAttribute('href'));
  }

  // ---------- search ----------
  function applyControls({ q, mode, k, c }) {
    $('#q').value = q;
    const scope = $('#scope');
    if (c && ![...scope.options].some((o) => o.value === c)) scope.append(el('option', { value: c }, c));
    scope.value = c || '';
    const radio = $(`input[name=mode][value="${mode}"]`);
    if (radio) radio.checked = true;
    const sel = $('#top-k');
    if (![...sel.options].some((o) => o.value === String(k))) sel.append(el('option', { value: k }, k));
    sel.value = String(k);
  }

  function currentControls() {
    return {
      q: $('#q').value.trim(),
      mode: ($('input[name=mode]:checked') || {}).value || config.default_mode,
      k: Number.parseInt($('#top-k').value, 10) || config.default_top_k,
      c: $('#scope').value,
    };
  }

  function submitSearch() {
    const params = currentControls();
    if (!params.q) { setStatus('请输入问题', 'warn'); $('#q').focus(); return; }
    const url = searchUrl(params.q, params.mode, params.k, params.c);
    if (url !== location.pathname + location.search) history.pushState(null, '', url);
    runSearch(params);
  }

  function showSkeleton(n) {
    $('#answer').hidden = true;
    const cards = Array.from({ length: Math.min(n, 3) }, () =>
      el('div', { class: 'skeleton-card', 'aria-hidden': 'true' },
        el('div', { class: 'sk sk-title' }), el('div', { class: 'sk' }), el('div', { class: 'sk sk-short' })));
    $('#results').replaceChildren(...cards);
  }

  async function runSearch({ q, mode, k, c }) {
    const seq = ++state.seq;
    const url = searchUrl(q, mode, k, c);
    const collections = c ? [c] : null;
    sessionStorage.setItem(LAST_SEARCH, url);
    $('#nav-search').setAttribute('href', url);
    document.title = `${q} · 党建问答`;
    setBusy(true); // disables #search-btn
    setStatus('正在检索…', 'info', true);
    showSkeleton(k);
    const answerMode = config.generation ? (($('input[name=answer-mode]:checked') || {}).value || 'generate') : null;
    const askBody = answerMode
      ? { question: q, top_k: k, mode: answerMode, collections } : { question: q, top_k: k, collections };
    const asking = answerMode === 'generate'
      ? streamAsk({ ...askBody, stream: true }, (kind, data) => { if (seq === state.seq) showStreamed(kind, data); })
      : api('/api/ask', { method: 'POST', body: askBody });
    const [ask, search] = await Promise.allSettled([
      asking,
      api('/api/search', { method: 'POST', body: { query: q, top_k: k, mode, doc_ids: null, doc_type: null, year: null, collections } }),
    ]);
    if (seq !== state.seq) return; // superseded by a newer navigation
    setBusy(false);
    state.renderedKey = location.search;
    const ok = search.status === 'fulfilled';
    const results = ok ? search.value.results || [] : [];
    renderResults(results, ok ? search.value.mode || mode : mode);
    renderAnswer(ask.status === 'fulfilled' ? ask.value : null, results);
    if (!ok) setSearchStatus(search.reason.message, 'error');
    else if (!results.length) setSearchStatus('没有找到相关段落，换个说法试试', 'empty');
    else if (ask.status === 'fulfilled' && ask.value.found === false) {
      // One message: the server's not-found text, then what the cards below are.
      setSearchStatus(`${ask.value.answer}以下 ${results.length} 条是最接近的段落，仅供参考。`, 'empty');
    } else {
      const where = c ? `在文档集「${c}」中` : '';
      setSearchStatus(`${where}找到 ${results.length} 条相关段落 · 用时 ${Math.round(search.value.took_ms || 0)} 毫秒`, 'info');
    }
  }

  function rerunIfShown() {
    if (state.renderedKey && $('#q').value.trim()) submitSearch();
  }

  // ---------- streamed answer (POST /api/ask with stream: our own server's text/event-stream) ----------
  async function streamAsk(body, onEvent) {
    const headers = { Accept: 'text/event-stream', 'Content-Type': 'application/json' };
    const storedKey = sessionStorage.getItem(KEY_STORE);
    if (storedKey) headers['X-API-Key'] = storedKey;
    let res;
    try { res = await fetch('/api/ask', { method: 'POST', headers, body: JSON.stringify(body) }); } catch (_) {
      throw new ApiError('无法连接服务，请检查网络或稍后重试', 0, 'network');
    }
    if (!res.ok || !res.body) {
      let data = null;
      try { data = await res.json(); } catch (_) { /* non-JSON body */ }
      throw new ApiError((data && data.error && data.error.message) || `请求失败（HTTP ${res.status}）`, res.status);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let final = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) kind = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        const payload = JSON.parse(data);
        if (kind === 'final') final = payload;
        onEvent(kind, payload);
      }
    }
    if (!final) throw new ApiError('回答中断，请重试', 0, 'stream');
    return final;
  }

  // While the model writes: the passages' marks are live buttons; the final event replaces the text.
  function showStreamed(kind, data) {
    const box = $('#answer');
    if (kind === 'citations') {
      state.streamCites = data.citations || [];
      state.streamText = '';
      box.dataset.deltas = '0';
      delete box.dataset.modeUsed;
      if (!state.streamCites.length) return;
      box.replaceChildren(
        el('div', { class: 'answer-head' }, el('h2', {}, '参考答案'), el('span', { class: 'confidence' }, '正在生成…')),
        el('p', { class: 'answer-text streaming' }));
      box.hidden = false;
    } else if (kind === 'delta' && state.streamCites && state.streamCites.length) {
      state.streamText += data.text || '';
      box.dataset.deltas = String(Number(box.dataset.deltas || 0) + 1);
      const text = $('.answer-text', box);
      if (text) text.replaceChildren(...answerPieces(state.streamText, state.streamCites));
    }
  }

  // ---------- answer box ----------
  function renderAnswer(data, results) {
    const box = $('#answer');
    box.replaceChildren();
    // Not found: the status line says so (once); the answer box stays empty.
    if (!data || !data.answer || !data.found) { box.hidden = true; return; }
    box.hidden = false;
    const head = el('div', { class: 'answer-head' }, el('h2', {}, '参考答案'));
    box.append(head);
    if (typeof data.confidence === 'number') {
      head.append(el('span', { class: 'confidence', title: '根据检索结果估计的可信程度' },
        `置信度 ${Math.round(data.confidence * 100)}%`));
    }
    const cites = data.citations || [];
    box.append(el('p', { class: 'answer-text' }, answerPieces(data.answer, cites)));
    const onCards = new Set(results.map((r) => r.passage_id));
    const extra = cites.map((c, i) => [c, i + 1]).filter(([c]) => !onCards.has(c.passage_id));
    if (extra.length) {
      box.append(el('div', { class: 'sources' }, el('h3', {}, '其他引用来源'),
        el('ol', {}, extra.map(([c, n]) => sourceItem(c, n)))));
    }
    box.dataset.modeUsed = data.mode_used || 'extract';
    if (data.fallback_reason) box.append(el('p', { class: 'answer-note' }, data.fallback_reason.message));
    if (data.mode_used === 'generate') {
      const removed = data.removed_sentences ? `，已删去 ${data.removed_sentences} 句无法在原文中核实的内容` : '';
      box.append(el('p', { class: 'disclaimer' }, `答案由语言模型依据检索到的段落生成，每句已与所引原文核对${removed}；请以原文为准。`));
    } else {
      box.append(el('p', { class: 'disclaimer' }, '答案根据检索到的段落自动摘编，请以原文为准。'));
    }
  }

  function answerPieces(text, cites) {
    const out = [];
    let last = 0;
    for (const m of text.matchAll(/【(\d+)】/g)) {
      const n = Number(m[1]);
      out.push(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (n < 1 || n > cites.length) { out.push(m[0]); continue; }
      out.push(el('button', {
        type: 'button', class: 'cite', 'data-n': n, title: cites[n - 1].title || '',
        'aria-label': `引用 ${n}：${cites[n - 1].title || ''}`, onclick: () => jumpToCitation(n, cites[n - 1]),
      }, `【${n}】`));
    }
    out.push(text.slice(last));
    return out;
  }

  function sourceItem(c, n) {
    return el('li', { class: 'source', id: `src-${n}`, tabindex: '-1' },
      el('div', { class: 'source-head' }, el('span', { class: 'source-n' }, `【${n}】`),
        c.title, c.section ? ` › ${c.section}` : ''),
      el('p', { class: 'source-text' }, highlighted(c.text || '', c.highlights)),
      el('a', { class: 'source-link', href: docUrl(c.doc_id, c.passage_id), 'data-nav': true }, '查看全文'));
  }

  function findCard(pid) {
    return $$('.result-card').find((c) => c.dataset.passageId === pid) || null;
  }

  function jumpToCitation(n, cite) {
    const target = findCard(cite.passage_id) || document.getElementById(`src-${n}`);
    if (!target) return;
    target.scrollIntoView({ behavior: reduceMotion() ? 'auto' : 'smooth', block: 'center' });
    target.focus({ preventScroll: true });
    target.classList.remove('flash');
    void target.offsetWidth; // restart the animation
    target.classList.add('flash');
    target.addEventListener('animationend', () => target.classList.remove('flash'), { once: true });
  }

  // ---------- result cards ----------
  function highlighted(text, ranges) {
    const spans = (ranges || [])
      .filter((r) => Array.isArray(r) && r.length >= 2)
      .map(([s, e]) => [Math.max(0, s | 0), Math.min(text.length, e | 0)])
      .filter(([s, e]) => e > s)
      .sort((a, b) => a[0] - b[0]);
    const out = [];
    let pos = 0;
    for (const [s, e] of spans) {
      if (e <= pos) continue;
      const start = Math.max(s, pos);
      if (start > pos) out.push(text.slice(pos, start));
      out.push(el('mark', {}, text.slice(start, e)));
      pos = e;
    }
    if (pos < text.length) out.push(text.slice(pos));
    return out;
  }

  function tags(r) {
    return [
      r.doc_type ? el('span', { class: 'tag' }, r.doc_type) : null,
      r.year ? el('span', { class: 'tag' }, `${r.year}年`) : null,
      r.level ? el('span', { class: 'tag' }, r.level) : null,
      r.page ? el('span', { class: 'tag tag-plain' }, `第${r.page}页`) : null,
    ];
  }

  function scoreBar(score) {
    const s = Math.max(0, Math.min(1, Number(score) || 0));
    const fill = el('span', { class: 'score-fill' });
    fill.style.width = `${(s * 100).toFixed(1)}%`;
    return el('div', { class: 'score', title: `综合得分 ${s.toFixed(3)}` },
      el('span', { class: 'score-label' }, '相关度'),
      el('span', { class: 'score-bar', role: 'img', 'aria-label': `相关度 ${Math.round(s * 100)}%` }, fill),
      el('span', { class: 'score-num' }, s.toFixed(2)));
  }

  function whyLine(r, mode) {
    const parts = [];
    const models = r.models || [];
    const byModel = models.length > 1 ? `（${models.map((m) => `${m.model} 第${m.rank}`).join('，')}）` : '';
    if (r.dense) parts.push(`语义第${r.dense.rank}名${byModel}`);
    else if (mode === 'hybrid') parts.push('语义未召回');
    if (r.lexical) parts.push(`关键词第${r.lexical.rank}名`);
    else if (mode === 'hybrid') parts.push('关键词未召回');
    if (r.matched_terms && r.matched_terms.length) parts.push(`命中词：${r.matched_terms.join('、')}`);
    if (!parts.length) return null;
    return el('p', { class: 'why' }, el('span', { class: 'why-label' }, '为什么排在这里：'), parts.join(' · '));
  }

  function resultCard(r, mode, i) {
    const ctx = r.context || {};
    const idBase = `ctx-${i}`;
    const before = el('div', { class: 'context context-before', id: `${idBase}-b`, hidden: true },
      ctx.before || '（已是文档开头）');
    const after = el('div', { class: 'context context-after', id: `${idBase}-a`, hidden: true },
      ctx.after || '（已是文档结尾）');
    const toggle = el('button', {
      type: 'button', class: 'context-toggle', 'aria-expanded': 'false', 'aria-controls': `${idBase}-b ${idBase}-a`,
    }, '上下文');
    toggle.addEventListener('click', () => {
      const open = before.hidden;
      before.hidden = after.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      toggle.textContent = open ? '收起上下文' : '上下文';
    });
    return el('article', { class: 'result-card', 'data-passage-id': r.passage_id, tabindex: '-1' },
      el('header', { class: 'card-head' },
        el('span', { class: 'rank', title: `第${r.rank}名` }, r.rank),
        el('h3', { class: 'card-title' }, r.title || r.doc_id)),
      el('div', { class: 'card-meta' }, r.section ? el('span', { class: 'section' }, r.section) : null, tags(r)),
      before,
      el('p', { class: 'passage-text' }, highlighted(r.text || '', r.highlights)),
      after,
      el('div', { class: 'card-foot' }, scoreBar(r.score), whyLine(r, mode)),
      el('div', { class: 'card-actions' }, toggle,
        el('a', { class: 'doc-link', href: docUrl(r.doc_id, r.passage_id), 'data-nav': true }, '查看全文')));
  }

  function renderResults(results, mode) {
    $('#results').replaceChildren(...results.map((r, i) => resultCard(r, mode, i)));
  }

  // ---------- document view ----------
  function backLink() {
    const href = sessionStorage.getItem(LAST_SEARCH) || '/';
    return el('a', { class: 'back-link', href, 'data-nav': true }, '← 返回检索结果');
  }

  function docBlocks(doc) {
    const text = doc.text || '';
    const ps = [...(doc.passages || [])].sort((a, b) => a.start - b.start);
    if (!ps.length) return [el('div', { class: 'passage' }, text)];
    const out = [];
    let pos = 0;
    let section = null;
    for (const p of ps) {
      const gap = p.start > pos ? text.slice(pos, p.start) : '';
      if (gap.trim()) out.push(el('div', { class: 'doc-gap' }, gap.trim()));
      // Section names may be shortened with 「…」; a run-in heading already opens the passage text.
      const lastSeg = (p.section || '').split(' › ').pop().replace(/…$/, '');
      const shown = gap.includes(lastSeg) || text.slice(p.start, p.end).startsWith(lastSeg);
      if (p.section && p.section !== section && !shown) {
        out.push(el('h3', { class: 'doc-section' }, p.section));
      }
      section = p.section;
      out.push(el('div', { class: 'passage', id: `p-${safeId(p.passage_id)}`, 'data-passage-id': p.passage_id, tabindex: '-1' },
        text.slice(Math.max(p.start, pos), p.end)));
      pos = Math.max(pos, p.end);
    }
    if (text.slice(pos).trim()) out.push(el('div', { class: 'doc-gap' }, text.slice(pos).trim()));
    return out;
  }

  async function showDoc(docId, pid) {
    showView('doc');
    const seq = ++state.seq;
    const view = $('#doc-view');
    view.replaceChildren(backLink());
    setStatus('正在加载文档…', 'info', true);
    let doc;
    try { doc = await api(`/api/documents/${encodeURIComponent(docId)}`); } catch (e) {
      if (seq === state.seq) setStatus(e.message, 'error');
      return;
    }
    if (seq !== state.seq) return;
    setStatus('');
    document.title = `${doc.title} · 党建问答`;
    view.append(
      el('header', { class: 'doc-head' }, el('h2', {}, doc.title || doc.doc_id), el('div', { class: 'card-meta' }, tags(doc))),
      el('article', { class: 'doc-text' }, docBlocks(doc)));
    const target = pid ? $$('.passage', view).find((n) => n.dataset.passageId === pid) : null;
    if (target) {
      target.classList.add('target');
      target.scrollIntoView({ block: 'center' });
      target.focus({ preventScroll: true });
    } else if (pid) {
      setStatus('未在文档中找到指定段落，已显示全文', 'warn');
    }
  }

  // ---------- document management ----------
  function apiKeyHeaders() {
    const input = $('#api-key');
    const key = input.value.trim();
    if (!key) { setStatus('请先填写 API 密钥', 'warn'); input.focus(); return null; }
    sessionStorage.setItem(KEY_STORE, key);
    return { 'X-API-Key': key };
  }

  function handleWriteError(e) {
    setStatus(e.message, 'error');
    if (e.status === 401) { $('#api-key').focus(); $('#api-key').select(); }
  }

  async function showManage() {
    showView('manage');
    document.title = '文档管理 · 党建问答';
    $('#api-key').value = sessionStorage.getItem(KEY_STORE) || '';
    setStatus('正在加载文档列表…', 'info', true);
    if (await loadDocuments()) setStatus('');
  }

  // The list is paged, filtered and sorted by the server (GET /api/documents), so it stays quick with
  // thousands of documents: the page only ever holds DOC_PAGE_SIZE rows.
  async function loadDocuments() {
    const seq = ++state.seq;
    const { collection, q, sort, page } = state.docs;
    const params = new URLSearchParams({ sort, page: String(page), page_size: String(DOC_PAGE_SIZE) });
    if (collection) params.set('collection', collection);
    if (q) params.set('q', q);
    try {
      const data = await api(`/api/documents?${params}`);
      if (seq !== state.seq) return false;
      if (data.total && page > data.pages) { // the last page emptied by a delete: show the one before
        state.docs.page = data.pages;
        return loadDocuments();
      }
      setCollections(data.collections || []);
      renderDocTable(data.documents || [], data);
      return true;
    } catch (e) {
      if (seq === state.seq) setStatus(e.message, 'error');
      return false;
    }
  }

  // Every place that offers the collections: the search scope, the list's filter, the upload's suggestions.
  function setCollections(collections) {
    state.collections = collections;
    const label = (c) => `${c.name}（${c.documents} 篇）`;
    for (const [sel, all] of [[$('#scope'), '全部文档集'], [$('#doc-collection'), '全部']]) {
      const chosen = sel.value;
      const names = collections.map((c) => c.name);
      const options = collections.map((c) => el('option', { value: c.name }, label(c)));
      if (chosen && !names.includes(chosen)) options.push(el('option', { value: chosen }, chosen));
      sel.replaceChildren(el('option', { value: '' }, all), ...options);
      sel.value = chosen;
    }
    $('#collection-names').replaceChildren(...collections.map((c) => el('option', { value: c.name })));
  }

  function renderDocTable(docs, page = {}) {
    const rows = docs.map((d) => el('tr', {},
      el('td', { 'data-label': '标题', class: 'col-title' },
        el('a', { href: docUrl(d.doc_id), 'data-nav': true }, d.title || d.doc_id),
        d.source ? el('div', { class: 'doc-source' }, d.source) : null),
      el('td', { 'data-label': '类型' }, d.doc_type || '—'),
      el('td', { 'data-label': '年份' }, d.year || '—'),
      el('td', { 'data-label': '文档集', class: 'col-collection' }, d.collection || 'default'),
      el('td', { 'data-label': '段落数', class: 'num' }, d.passages ?? '—'),
      el('td', { 'data-label': '添加时间' }, fmtDate(d.added_at) || '—'),
      el('td', { class: 'col-action' }, el('button', {
        type: 'button', class: 'delete-btn', 'aria-label': `删除「${d.title || d.doc_id}」`, onclick: () => deleteDoc(d),
      }, '删除'))));
    $('#doc-table tbody').replaceChildren(...rows);
    const filtered = Boolean(state.docs.collection || state.docs.q);
    $('#doc-empty').textContent = filtered ? '没有符合条件的文档。' : '暂无文档，请先上传。';
    $('#doc-empty').hidden = docs.length > 0;
    const pages = page.pages || 1;
    $('#doc-pager').hidden = !page.total;
    $('#doc-page-info').textContent = `第 ${page.page || 1} / ${pages} 页 · 共 ${page.total || 0} 篇`;
    $('#doc-prev').disabled = (page.page || 1) <= 1;
    $('#doc-next').disabled = (page.page || 1) >= pages;
  }

  function changeDocs(update) {
    Object.assign(state.docs, { page: 1 }, update);
    loadDocuments();
  }

  async function deleteDoc(d) {
    const name = d.title || d.doc_id;
    const headers = apiKeyHeaders();
    if (!headers || !window.confirm(`确定要删除「${name}」吗？此操作不可撤销。`)) return;
    setStatus(`正在删除「${name}」…`, 'info', true);
    try {
      await api(`/api/documents/${encodeURIComponent(d.doc_id)}`, { method: 'DELETE', headers });
      await loadDocuments();
      setStatus(`已删除「${name}」`, 'ok');
      loadHealth();
    } catch (e) { handleWriteError(e); }
  }

  async function uploadFiles() {
    const input = $('#upload-files');
    const files = [...input.files];
    if (!files.length) { setStatus('请先选择要上传的文件', 'warn'); input.focus(); return; }
    const headers = apiKeyHeaders();
    if (!headers) return;
    const form = new FormData();
    const collection = $('#upload-collection').value.trim();
    if (collection) form.append('collection', collection);
    files.forEach((f) => form.append('files', f, f.name));
    const btn = $('#upload-btn');
    btn.disabled = true;
    setStatus(`正在上传并检查（${files.length} 个文件）…`, 'info', true);
    try {
      const accepted = await api('/api/documents', { method: 'POST', body: form, headers });
      input.value = '';
      const job = await followJob(accepted, headers);
      const summary = renderUploadResult(job.result || {});
      await loadDocuments();
      if (job.state === 'failed') setStatus(job.error ? job.error.message : '没有添加任何文档', 'error');
      else {
        const where = job.collection && job.collection !== 'default' ? `（文档集「${job.collection}」）` : '';
        setStatus(summary + where, (job.result.failed || []).length ? 'warn' : 'ok');
      }
      loadHealth();
    } catch (e) { handleWriteError(e); } finally { btn.disabled = false; }
  }

  // An upload is indexed by a job on the server (POST answered 202); poll it and show its progress.
  async function followJob(job, headers) {
    const bar = el('progress', { max: '1', value: '0', 'aria-label': '建立索引进度' });
    const label = el('span', { class: 'job-label' }, '排队中…');
    const box = $('#upload-result');
    box.replaceChildren(el('h3', {}, '正在建立索引'), el('div', { class: 'job-progress' }, bar, label));
    box.hidden = false;
    while (job.state === 'queued' || job.state === 'running') {
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api(`/api/jobs/${encodeURIComponent(job.job_id)}`, { headers });
      const total = job.passages_total || 0;
      bar.max = Math.max(total, 1);
      bar.value = job.passages_done || 0;
      label.textContent = job.state === 'queued' ? '排队中…'
        : total ? `已编码 ${job.passages_done} / ${total} 个段落` : '正在读取文件…';
      setStatus(`正在建立索引：${label.textContent}（检索不受影响）`, 'info', true);
    }
    return job;
  }

  function renderUploadResult(res) {
    const groups = [['added', '新增'], ['replaced', '替换'], ['skipped', '跳过'], ['failed', '失败']];
    const box = $('#upload-result');
    const counts = [];
    box.replaceChildren(el('h3', {}, '上传结果'));
    for (const [key, label] of groups) {
      const items = res[key] || [];
      counts.push(`${label} ${items.length}`);
      if (!items.length) continue;
      box.append(el('div', { class: `result-group group-${key}` }, el('h4', {}, `${label}（${items.length}）`),
        el('ul', {}, items.map((it) => el('li', {}, it.reason
          ? `${it.file}：${it.reason}`
          : `${it.title || it.doc_id}（${it.passages} 个段落）`)))));
    }
    box.hidden = false;
    return `上传完成：${counts.join('，')}`;
  }

  // ---------- footer ----------
  async function loadHealth() {
    const f = $('#health');
    try {
      const h = await api('/api/health');
      const parts = [`文档 ${h.documents} 篇`, `段落 ${h.passages} 个`, `模型 ${h.model}`];
      if (h.built_at) parts.push(`索引更新于 ${fmtDate(h.built_at)}`);
      if ((h.collections || []).length > 1) parts.splice(1, 0, `文档集 ${h.collections.length} 个`);
      setCollections(h.collections || []);
      f.textContent = parts.join(' · ');
      f.classList.remove('offline');
    } catch (e) {
      f.textContent = e.status === 0 ? '无法连接服务' : e.message;
      f.classList.add('offline');
    }
  }

  // ---------- the server's limits ----------
  function applyConfig() {
    $('#q').maxLength = config.max_query_chars;
    const modes = $('#modes');
    $$('label.mode', modes).forEach((label) => label.remove());
    for (const mode of config.modes) {
      const radio = el('input', { type: 'radio', name: 'mode', value: mode, checked: mode === config.default_mode });
      radio.addEventListener('change', rerunIfShown);
      modes.append(el('label', { class: 'mode' }, radio, ` ${MODE_LABELS[mode] || mode}`));
    }
    // 生成 / 摘编: only when the server has a language model (DJQA_LLM_BASE_URL).
    const answerModes = $('#answer-modes');
    $$('label.mode', answerModes).forEach((label) => label.remove());
    answerModes.hidden = !config.generation;
    if (config.generation) {
      for (const [mode, label] of Object.entries(ANSWER_MODE_LABELS)) {
        const radio = el('input', { type: 'radio', name: 'answer-mode', value: mode, checked: mode === 'generate' });
        radio.addEventListener('change', rerunIfShown);
        answerModes.append(el('label', { class: 'mode' }, radio, ` ${label}`));
      }
    }
    const choices = TOP_K_CHOICES.filter((k) => k <= config.max_top_k);
    for (const k of [config.default_top_k, config.max_top_k]) if (!choices.includes(k)) choices.push(k);
    $('#top-k').replaceChildren(...choices.sort((a, b) => a - b).map((k) => el('option', { value: k }, k)));
    $('#top-k').value = String(config.default_top_k);
    if (config.max_upload_bytes) {
      const mb = (n) => `${Math.round((n / 1048576) * 10) / 10} MB`;
      const num = (n) => Number(n).toLocaleString('zh-CN');
      $('#upload-limits').textContent = `上限：每个文件 ${mb(config.max_upload_bytes)}，一次 ${config.max_upload_files} 个；`
        + `每篇文档 ${num(config.max_document_chars)} 字、${num(config.max_document_passages)} 个段落；`
        + `Word 文件解压后 ${mb(config.max_unpacked_bytes)}；PDF ${num(config.max_pdf_pages)} 页。`;
    }
  }

  async function loadConfig() {
    try { Object.assign(config, await api('/api/config')); } catch (_) { /* the footer reports the server down */ }
    applyConfig();
  }

  // ---------- init ----------
  async function init() {
    $('#search-form').addEventListener('submit', (e) => { e.preventDefault(); submitSearch(); });
    $$('.example').forEach((b) => b.addEventListener('click', () => {
      $('#q').value = b.textContent.trim();
      submitSearch();
    }));
    $('#top-k').addEventListener('change', rerunIfShown);
    $('#upload-btn').addEventListener('click', uploadFiles);
    $('#scope').addEventListener('change', rerunIfShown);
    $('#doc-filters').addEventListener('submit', (e) => e.preventDefault());
    $('#doc-collection').addEventListener('change', (e) => changeDocs({ collection: e.target.value }));
    $('#doc-sort').addEventListener('change', (e) => changeDocs({ sort: e.target.value }));
    let typing = null;
    $('#doc-search').addEventListener('input', (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => changeDocs({ q: e.target.value.trim() }), 250);
    });
    $('#doc-prev').addEventListener('click', () => { state.docs.page -= 1; loadDocuments(); });
    $('#doc-next').addEventListener('click', () => { state.docs.page += 1; loadDocuments(); });
    $('#api-key').addEventListener('change', (e) => sessionStorage.setItem(KEY_STORE, e.target.value.trim()));
    const last = sessionStorage.getItem(LAST_SEARCH);
    if (last) $('#nav-search').setAttribute('href', last);
    document.addEventListener('click', onNavClick);
    window.addEventListener('popstate', route);
    loadHealth();
    await loadConfig();
    route();
  }

  init();
})();
