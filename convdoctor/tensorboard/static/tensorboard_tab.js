// convdoctor's TensorBoard tab: a run selector and the selected run's report in a frame.
// TensorBoard loads this module in the plugin's frame, whose base URL is the plugin's route prefix, and calls
// render(). Run and worker names are user data: they reach the page only as text and as URL parameters.

function element(tag, attributes, text) {
  var node = document.createElement(tag);
  Object.keys(attributes || {}).forEach(function (name) { node.setAttribute(name, attributes[name]); });
  if (text !== undefined) { node.textContent = text; }
  return node;
}

function reportUrl(choice) {
  return './report?' + new URLSearchParams({run: choice.run, worker: choice.worker}).toString();
}

function showRuns(body, runs) {
  var choices = [];
  runs.forEach(function (run) {
    run.workers.forEach(function (worker) {
      var label = run.workers.length > 1 ? run.run + ' · ' + worker : run.run;
      choices.push({run: run.run, worker: worker, label: label});
    });
  });
  var bar = element('div', {id: 'bar'});
  bar.appendChild(element('label', {for: 'run'}, 'Run '));
  var select = element('select', {id: 'run'});
  choices.forEach(function (choice, index) { select.appendChild(element('option', {value: String(index)}, choice.label)); });
  bar.appendChild(select);
  bar.appendChild(element('span', {id: 'count'}, choices.length + (choices.length === 1 ? ' trace' : ' traces')));
  var frame = element('iframe', {id: 'report', title: 'convdoctor report'});
  var show = function () { frame.src = reportUrl(choices[Number(select.value)]); };
  select.addEventListener('change', show);
  body.appendChild(bar);
  body.appendChild(frame);
  show();
}

export async function render() {
  var style = element('style', {}, [
    'html, body { margin: 0; height: 100%; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }',
    'body { display: flex; flex-direction: column; }',
    '#bar { padding: .5rem 1rem; border-bottom: 1px solid #d9e2ec; display: flex; gap: .6rem; align-items: center; }',
    '#count { color: #616e7c; font-size: .9rem; }',
    '#report { flex: 1; width: 100%; border: 0; }',
    '.message { padding: 1rem 1.5rem; }',
  ].join('\n'));
  document.head.appendChild(style);
  var body = document.body;
  var response = await fetch('./runs');
  if (!response.ok) {
    body.appendChild(element('p', {class: 'message'}, 'convdoctor could not list the runs: HTTP ' + response.status));
    return;
  }
  var runs = await response.json();
  if (runs.length === 0) {
    body.appendChild(element('p', {class: 'message'},
      'No PyTorch traces in this log dir: run `convdoctor profile model.py`, then `convdoctor tensorboard`.'));
    return;
  }
  showRuns(body, runs);
}
