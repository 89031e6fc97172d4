/**
 * One job in the side panel: its grid (click a call to see its lines), its log
 * viewer (a call's lines and traceback, or the last lines of all calls), its
 * timeline and histogram, drawn from a `job` reply of the kernel.
 */
import { b64bytes } from './control';
import { drawHistogram } from './histogram';
import { inflate, packedColours } from './states';
import { drawTimeline } from './timeline';

const CELL = 6;
const PANEL_LEFT = 70; // room for the row labels in a narrow panel
const COLOURS = packedColours();

export function esc(text: unknown): string {
  return String(text ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export class JobDetail {
  readonly node: HTMLDivElement;
  private states: Uint8Array = new Uint8Array(0);

  /** `onCall(i)`: the user clicked call `i` in the grid (-1: "All calls"). */
  constructor(private onCall: (call: number) => void) {
    this.node = document.createElement('div');
    this.node.className = 'sif-panel-detail';
  }

  clear(text = ''): void {
    this.node.innerHTML = text;
  }

  /** Show a `job` reply (see sif_magic/display/panel.py), `width` pixels wide. */
  show(reply: any, width: number): void {
    if (!this.node.querySelector('.sif-panel-log')) {
      this.build();
    }
    const d = this.node;
    d.dataset.jobId = reply.job.job_id;
    (d.querySelector('.sif-panel-detail-title') as HTMLElement).textContent =
      `${reply.job.name} · job ${reply.job.job_id} · ${reply.job.rate}`;
    const log = reply.log || {};
    (d.querySelector('.sif-panel-log-title') as HTMLElement).textContent = log.title || '';
    const lines: Array<[number, string]> = log.lines || [];
    const pre = d.querySelector('.sif-panel-log') as HTMLElement;
    pre.innerHTML = lines
      .map(([s, t]) => `<span class="sif-log-line${s === 2 ? ' sif-log-stderr' : ''}">${esc(t)}</span>`)
      .join('');
    const tb = d.querySelector('.sif-panel-traceback') as HTMLElement;
    tb.textContent = log.traceback || '';
    tb.style.display = log.traceback ? '' : 'none';
    const text = getComputedStyle(this.node).getPropertyValue('--jp-ui-font-color1').trim() || '#333333';
    void inflate(b64bytes(reply.states_z)).then(states => {
      this.states = states;
      this.drawGrid(d.querySelector('.sif-panel-grid') as HTMLCanvasElement, width);
    });
    const tl = reply.timeline;
    void inflate(b64bytes(tl.cells_z)).then(cells => {
      const canvas = d.querySelector('.sif-panel-timeline') as HTMLCanvasElement;
      canvas.width = width;
      drawTimeline(canvas, { ...tl, cells, lo: tl.t0, hi: tl.t1 }, text, PANEL_LEFT);
      canvas.dataset.rows = String(tl.rows.length);
    });
    const hist = d.querySelector('.sif-panel-histogram') as HTMLCanvasElement;
    hist.width = width;
    drawHistogram(hist, reply.hist || {}, text, PANEL_LEFT);
  }

  private build(): void {
    this.node.innerHTML =
      '<h3 class="sif-panel-detail-title"></h3>' +
      '<canvas class="sif-panel-grid" title="click a call to see its lines"></canvas>' +
      '<div class="sif-log-bar"><span class="sif-panel-log-title sif-log-title"></span> ' +
      '<button class="sif-panel-all">All calls</button></div>' +
      '<pre class="sif-panel-log"></pre><pre class="sif-panel-traceback sif-log-traceback"></pre>' +
      '<h3>Timeline</h3><canvas class="sif-panel-timeline"></canvas>' +
      '<canvas class="sif-panel-histogram"></canvas>';
    const grid = this.node.querySelector('.sif-panel-grid') as HTMLCanvasElement;
    grid.addEventListener('click', (event: MouseEvent) => {
      const box = grid.getBoundingClientRect();
      const cols = Math.max(1, Math.floor(box.width / CELL));
      const i = Math.floor((event.clientY - box.top) / CELL) * cols + Math.floor((event.clientX - box.left) / CELL);
      if (i >= 0 && i < this.states.length) {
        this.onCall(i);
      }
    });
    (this.node.querySelector('.sif-panel-all') as HTMLElement).addEventListener('click', () => {
      this.onCall(-1);
    });
  }

  private drawGrid(canvas: HTMLCanvasElement, width: number): void {
    const n = this.states.length;
    const cols = Math.max(1, Math.floor(width / CELL));
    const height = Math.max(CELL, Math.ceil(n / cols) * CELL);
    canvas.width = cols * CELL;
    canvas.height = height;
    const ctx = canvas.getContext('2d');
    if (!ctx) {
      return;
    }
    const image = ctx.createImageData(canvas.width, height);
    const px = new Uint32Array(image.data.buffer);
    for (let i = 0; i < n; i++) {
      const x0 = (i % cols) * CELL;
      const y0 = Math.floor(i / cols) * CELL;
      for (let dy = 0; dy < CELL - 1; dy++) {
        px.fill(COLOURS[this.states[i]], (y0 + dy) * canvas.width + x0, (y0 + dy) * canvas.width + x0 + CELL - 1);
      }
    }
    ctx.putImageData(image, 0, 0);
    canvas.dataset.cols = String(cols);
    canvas.dataset.cell = String(CELL);
    canvas.dataset.drawn = String(n);
  }
}
