/**
 * LogView: the stdout/stderr lines of a call (or of all calls), its traceback,
 * a mode dropdown the kernel reacts to, a client-side search that filters and
 * highlights lines, and a follow toggle that keeps the view at the bottom.
 * Another mode is told on the kernel's control channel, answered while a
 * blocking cell runs (the kernel then sets the synced `mode`); where that
 * channel does not answer, the view sets `mode` itself.
 */
import { DOMWidgetModel, DOMWidgetView } from '@jupyter-widgets/base';

import { askWidget } from './control';
import { MODULE_NAME, MODULE_VERSION } from './version';

const STDERR = 2;
const MODES: ReadonlyArray<[string, string]> = [
  ['call', 'This call'],
  ['all', 'All calls'],
  ['failures', 'Failures']
];
/** Lines put in the page at most (the newest); search still looks at every line. */
const MAX_SHOWN_LINES = 5000;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

type Entry = [number, string];

export class LogViewModel extends DOMWidgetModel {
  defaults(): Backbone.ObjectHash {
    return {
      ...super.defaults(),
      _model_name: 'LogViewModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'LogViewView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      title: '',
      entries: [],
      traceback: '',
      dropped: 0,
      mode: 'call',
      follow: true,
      via_control: false
    };
  }
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Escape `text` and wrap every case-insensitive occurrence of `query` in <mark>. */
function highlight(text: string, query: string): string {
  if (!query) {
    return escapeHtml(text);
  }
  const lower = text.toLowerCase();
  let out = '';
  let at = 0;
  for (let hit = lower.indexOf(query, at); hit >= 0; hit = lower.indexOf(query, at)) {
    out += escapeHtml(text.slice(at, hit));
    out += `<mark>${escapeHtml(text.slice(hit, hit + query.length))}</mark>`;
    at = hit + query.length;
  }
  return out + escapeHtml(text.slice(at));
}

export class LogViewView extends DOMWidgetView {
  private titleEl!: HTMLSpanElement;
  private modeEl!: HTMLSelectElement;
  private searchEl!: HTMLInputElement;
  private matchesEl!: HTMLSpanElement;
  private followEl!: HTMLInputElement;
  private body!: HTMLDivElement;
  private droppedEl!: HTMLDivElement;
  private linesEl!: HTMLPreElement;
  private tracebackEl!: HTMLPreElement;
  private emptyEl!: HTMLDivElement;
  private frame = 0;

  render(): void {
    this.el.classList.add('sif-log');
    const bar = document.createElement('div');
    bar.className = 'sif-log-bar';
    this.titleEl = document.createElement('span');
    this.titleEl.className = 'sif-log-title';
    this.modeEl = document.createElement('select');
    this.modeEl.className = 'sif-log-mode';
    this.modeEl.title = 'Which lines to show';
    for (const [value, label] of MODES) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      this.modeEl.appendChild(option);
    }
    this.searchEl = document.createElement('input');
    this.searchEl.type = 'search';
    this.searchEl.className = 'sif-log-search';
    this.searchEl.placeholder = 'Search logs';
    this.matchesEl = document.createElement('span');
    this.matchesEl.className = 'sif-log-matches';
    const followLabel = document.createElement('label');
    followLabel.className = 'sif-log-follow';
    followLabel.title = 'Keep the newest lines in view';
    this.followEl = document.createElement('input');
    this.followEl.type = 'checkbox';
    followLabel.append(this.followEl, document.createTextNode(' Follow'));
    bar.append(this.titleEl, this.modeEl, this.searchEl, this.matchesEl, followLabel);

    this.body = document.createElement('div');
    this.body.className = 'sif-log-body';
    this.droppedEl = document.createElement('div');
    this.droppedEl.className = 'sif-log-dropped';
    this.linesEl = document.createElement('pre');
    this.linesEl.className = 'sif-log-lines';
    this.tracebackEl = document.createElement('pre');
    this.tracebackEl.className = 'sif-log-traceback';
    this.emptyEl = document.createElement('div');
    this.emptyEl.className = 'sif-log-empty';
    this.emptyEl.textContent = 'No output.';
    this.body.append(this.droppedEl, this.linesEl, this.tracebackEl, this.emptyEl);
    this.el.append(bar, this.body);

    this.modeEl.addEventListener('change', () => {
      const mode = this.modeEl.value;
      void askWidget(this.model, { op: 'mode', mode }).then(reply => {
        if (reply) {
          this.model.set_state({ mode }); // the kernel knows: nothing to send
        } else {
          this.model.set('mode', mode);
          this.model.save_changes();
        }
      });
    });
    this.searchEl.addEventListener('input', () => this.scheduleRender());
    this.followEl.addEventListener('change', () => {
      this.model.set('follow', this.followEl.checked);
      this.model.save_changes();
    });
    this.body.addEventListener('scroll', this.onScroll);

    this.listenTo(
      this.model,
      'change:title change:entries change:traceback change:dropped',
      this.scheduleRender
    );
    this.listenTo(this.model, 'change:mode', this.syncControls);
    this.listenTo(this.model, 'change:follow', this.onFollowChange);
    this.syncControls();
    this.followEl.checked = this.model.get('follow');
    this.renderLog();
  }

  remove(): any {
    if (this.frame) {
      window.cancelAnimationFrame(this.frame);
    }
    return super.remove();
  }

  private syncControls(): void {
    this.modeEl.value = this.model.get('mode');
  }

  private onFollowChange(): void {
    this.followEl.checked = this.model.get('follow');
    if (this.followEl.checked) {
      this.scrollToEnd();
    }
  }

  private scheduleRender(): void {
    if (!this.frame) {
      this.frame = window.requestAnimationFrame(() => this.renderLog());
    }
  }

  private renderLog(): void {
    this.frame = 0;
    const query = this.searchEl.value.toLowerCase();
    const entries: Entry[] = this.model.get('entries') || [];
    const parts: string[] = [];
    let total = 0;
    let shown = 0;
    for (const [stream, text] of entries) {
      const lines = String(text).replace(ANSI, '').split('\n');
      if (lines.length > 1 && lines[lines.length - 1] === '') {
        lines.pop();
      }
      const cls = stream === STDERR ? 'sif-log-line sif-log-stderr' : 'sif-log-line';
      for (const line of lines) {
        total++;
        if (query && !line.toLowerCase().includes(query)) {
          continue;
        }
        shown++;
        parts.push(`<span class="${cls}">${highlight(line, query)}\n</span>`);
      }
    }
    const hidden = Math.max(0, parts.length - MAX_SHOWN_LINES);
    this.linesEl.innerHTML =
      (hidden
        ? `<span class="sif-log-hidden">${hidden} earlier lines not shown (search to find them)\n</span>`
        : '') + parts.slice(hidden).join('');
    this.titleEl.textContent = this.model.get('title');

    const dropped: number = this.model.get('dropped');
    this.droppedEl.textContent = dropped > 0 ? `${dropped} earlier bytes dropped` : '';
    this.droppedEl.style.display = dropped > 0 ? '' : 'none';

    const traceback = String(this.model.get('traceback') || '').replace(ANSI, '');
    this.tracebackEl.innerHTML = highlight(traceback, query);
    this.tracebackEl.style.display = traceback ? '' : 'none';

    this.emptyEl.style.display = total === 0 && !traceback ? '' : 'none';
    this.matchesEl.textContent = query ? `${shown} of ${total} lines` : '';
    if (this.model.get('follow')) {
      this.scrollToEnd();
    }
  }

  private scrollToEnd(): void {
    this.body.scrollTop = this.body.scrollHeight;
  }

  /** Scrolling up to read stops following; the checkbox turns it back on. */
  private onScroll = (): void => {
    const atEnd = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 4;
    if (!atEnd && this.model.get('follow')) {
      this.model.set('follow', false);
      this.model.save_changes();
    }
  };
}
