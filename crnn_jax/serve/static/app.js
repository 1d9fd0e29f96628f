// The page: files chosen or dropped are sent one request each to /api/predict
// (a few at a time) and shown as cards: top genres, the model's spectrogram
// with the genre of each window under it, and the embeddings to download.
'use strict';

const MAX_PARALLEL = 3;
// The server answers /api/ only with this run's token, which it puts in the page.
const AUTHORIZATION = {
  Authorization: `Bearer ${document.querySelector('meta[name="crnn-jax-token"]').content}`};
const state = {model: null, queue: [], running: 0};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'style') Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function clock(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, '0') : String(m);
  return (h ? `${h}:` : '') + `${mm}:${String(r).padStart(2, '0')}`;
}

const megabytes = (bytes) => `${Math.round(bytes / 1048576)} MB`;

async function loadModel() {
  const info = document.getElementById('model');
  try {
    const response = await fetch('/api/model', {headers: AUTHORIZATION});
    state.model = await response.json();
  } catch (e) {
    info.textContent = 'The server does not answer.';
    return;
  }
  const m = state.model;
  info.textContent = `${m.model || m.workdir}: ${m.classes.length} genres, ${m.scores}, ` +
      `${m.clip_seconds} s windows`;
  document.getElementById('limits').textContent =
      `${m.extensions.join(' ')} up to ${megabytes(m.max_upload_bytes)} each`;
}

function addFiles(files) {
  const batch = document.createDocumentFragment();  // newest choice on top, in its order
  for (const file of files) {
    const card = el('article', {class: 'card', 'data-file': file.name});
    card.append(el('h2', {text: file.name}), el('p', {class: 'status', text: 'waiting…'}));
    batch.append(card);
    state.queue.push({file, card});
  }
  document.getElementById('results').prepend(batch);
  pump();
}

function pump() {
  while (state.running < MAX_PARALLEL && state.queue.length) {
    const job = state.queue.shift();
    state.running += 1;
    upload(job).finally(() => { state.running -= 1; pump(); });
  }
}

function fail(card, message) {
  card.classList.add('failed');
  card.querySelector('.status').textContent = message;
}

async function upload({file, card}) {
  if (state.model && file.size > state.model.max_upload_bytes) {
    fail(card, `file too large: the limit is ${megabytes(state.model.max_upload_bytes)}`);
    return;
  }
  card.querySelector('.status').textContent = 'scoring…';
  let response, body;
  try {
    response = await fetch(`/api/predict?name=${encodeURIComponent(file.name)}`, {
      method: 'POST', body: file,
      headers: {'Content-Type': 'application/octet-stream', ...AUTHORIZATION}});
    body = await response.json();
  } catch (e) {
    fail(card, `no answer from the server (${e.message})`);
    return;
  }
  if (!response.ok) fail(card, body.error || `HTTP ${response.status}`);
  else render(card, body);
}

function bars(result) {
  const box = el('div', {}, el('h3', {text: 'Top genres'}));
  result.top_k.forEach((entry, rank) => {
    const percent = (100 * entry.probability).toFixed(1);
    box.append(el('div', {class: rank === 0 ? 'bar top' : 'bar'},
        el('span', {class: rank === 0 ? 'name top-genre' : 'name', text: entry.genre}),
        el('span', {class: 'track'}, el('span', {class: 'fill', style: {width: `${percent}%`}})),
        el('span', {class: 'value', text: `${percent}%`})));
  });
  if (result.above_threshold) {
    const names = result.above_threshold.map((e) => e.genre).join(', ') || 'none';
    box.append(el('p', {class: 'note', text: `At or above ${result.threshold}: ${names}`}));
  }
  if (result.tabular) box.append(el('p', {class: 'note', text: `Tabular inputs: ${result.tabular.source}`}));
  return box;
}

function timeline(result) {
  const t = result.timeline, windows = t.starts.length;
  const classes = Object.keys(result.probabilities);
  const grid = el('div', {class: 'timeline',
                          style: {gridTemplateColumns: `7rem repeat(${windows}, minmax(0, 1fr))`}});
  grid.append(el('span', {class: 'label', text: 'input'}),
              el('img', {src: result.spectrogram, style: {gridColumn: '2 / -1'},
                         alt: 'the spectrogram the model sees, low frequencies at the bottom'}));
  for (const entry of result.top_k) {
    const k = classes.indexOf(entry.genre);
    grid.append(el('span', {class: 'label', text: entry.genre}));
    t.probabilities.forEach((row, i) => {
      const end = t.starts[i] + t.window_seconds;
      grid.append(el('span', {class: 'cell', style: {opacity: Math.max(row[k], 0.03)},
                              title: `${clock(t.starts[i])}–${clock(end)} ${entry.genre} ` +
                                     `${(100 * row[k]).toFixed(1)}%`}));
    });
  }
  grid.append(el('span', {class: 'label'}));
  const every = Math.ceil(windows / 8);
  t.starts.forEach((start, i) => {
    grid.append(el('span', {class: 'time', text: i % every === 0 ? clock(start) : ''}));
  });
  return el('div', {}, el('h3', {text: 'Genre over time (one column per window)'}), grid,
      el('p', {class: 'note', text: 'Above: what the model sees, its uint8 spectrogram ' +
                                    '(dark = loud, low frequencies at the bottom).'}));
}

function render(card, result) {
  const a = result.audio;
  const windows = result.windows === 1 ? '1 window' : `${result.windows} windows averaged`;
  card.querySelector('.status').textContent =
      `${windows} · ${clock(a.seconds)} · ${a.channels} channel${a.channels === 1 ? '' : 's'} ` +
      `at ${a.sample_rate / 1000} kHz, scored as mono 22.05 kHz`;
  card.dataset.topGenre = result.top_k[0].genre;
  const e = result.embeddings;
  const link = el('a', {class: 'download', download: e.filename, title: e.description,
                        href: `data:application/octet-stream;base64,${e.npz_base64}`,
                        text: `Download embeddings (.npz, ${e.shape[0]} × ${e.shape[1]})`});
  card.append(el('div', {class: 'grid'}, bars(result), timeline(result)), link);
}

function wireDropZone() {
  const drop = document.getElementById('drop');
  const input = document.getElementById('files');
  input.addEventListener('change', () => { addFiles(input.files); input.value = ''; });
  for (const name of ['dragenter', 'dragover']) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add('over'); });
  }
  for (const name of ['dragleave', 'drop']) {
    drop.addEventListener(name, () => drop.classList.remove('over'));
  }
  drop.addEventListener('drop', (event) => { event.preventDefault(); addFiles(event.dataTransfer.files); });
}

wireDropZone();
loadModel();
