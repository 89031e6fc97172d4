/**
 * RunCharts: a job's timeline (a row per worker slot, binned by the kernel) and
 * the histogram of its call durations, each drawn on a <canvas>.
 *
 * The timeline comes binned (`cells_z`: rows x buckets bytes, 0 idle, else the
 * state code + 1, +128 when the call was retried), so its cost does not grow
 * with the number of calls. Dragging across it zooms: the view stretches what
 * it has at once and asks the kernel (`window`) for the span binned anew; a
 * double click asks for the whole job.
 */
import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { ask, b64bytes } from './control';
import { make } from './dom';
import { drawHistogram, IHistogram, seconds } from './histogram';
import { bytesOf, inflate } from './states';
import { AXIS, ITimeline, LEFT, RIGHT, drawTimeline, legendHtml } from './timeline';
import { MODULE_NAME, MODULE_VERSION } from './version';


export class RunChartsModel extends DOMWidgetModel {
  /** The decoded timeline table; replaced on every update. */
  cells!: Uint8Array;
  private seq!: number;

  defaults(): Backbone.ObjectHash {
    return {
      ...super.defaults(),
      _model_name: 'RunChartsModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'RunChartsView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      rows: [],
      calls: [],
      buckets: 0,
      t0: 0,
      t1: 0,
      cells_z: null,
      hist: {},
      window: [],
      job_id: ''
    };
  }

  static serializers: ISerializers = {
    ...DOMWidgetModel.serializers,
    cells_z: { deserialize: (value: unknown): unknown => value }
  };

  initialize(attributes: Backbone.ObjectHash, options: any): void {
    super.initialize(attributes, options);
    this.cells = new Uint8Array(0);
    this.seq = 0;
    this.on('change:cells_z', this.decode, this);
    this.decode();
  }

  private decode(): void {
    const seq = ++this.seq;
    inflate(bytesOf(this.get('cells_z')))
      .then(cells => {
        if (seq === this.seq) {
          this.cells = cells;
          this.trigger('cells', cells);
        }
      })
      .catch(err => console.error('sif-magic: cannot decode the timeline', err));
  }
}

export class RunChartsView extends DOMWidgetView {
  private head!: HTMLDivElement;
  private legend!: HTMLDivElement;
  private timeline!: HTMLCanvasElement;
  private selection!: HTMLDivElement;
  private histogram!: HTMLCanvasElement;
  private lo = 0;
  private hi = 0;
  /** The span the user zoomed to (null: the whole job), and its data from the kernel. */
  private zoom: [number, number] | null = null;
  private zoomData: ITimeline | null = null;
  private dragFrom = -1;
  private frame = 0;
  private resizeObserver: ResizeObserver | null = null;

  render(): void {
    this.el.classList.add('sif-charts');
    this.head = make('div', 'sif-charts-head');
    this.legend = make('div', 'sif-charts-legend');
    const wrap = make('div', 'sif-charts-timeline');
    this.timeline = make('canvas', 'sif-charts-timeline-canvas');
    this.selection = make('div', 'sif-charts-selection');
    wrap.append(this.timeline, this.selection);
    this.histogram = make('canvas', 'sif-charts-histogram');
    this.el.append(this.head, this.legend, wrap, this.histogram);
    this.timeline.addEventListener('mousedown', this.onDown);
    this.timeline.addEventListener('dblclick', this.onDoubleClick);
    window.addEventListener('mousemove', this.onMove);
    window.addEventListener('mouseup', this.onUp);
    this.listenTo(this.model, 'cells', this.onData);
    this.listenTo(this.model, 'change:hist change:rows', this.scheduleDraw);
    if (typeof ResizeObserver !== 'undefined') {
      this.resizeObserver = new ResizeObserver(() => this.scheduleDraw());
      this.resizeObserver.observe(this.el);
    }
    this.onData();
  }

  remove(): any {
    this.resizeObserver?.disconnect();
    window.removeEventListener('mousemove', this.onMove);
    window.removeEventListener('mouseup', this.onUp);
    if (this.frame) {
      window.cancelAnimationFrame(this.frame);
    }
    return super.remove();
  }

  /** New data: show the span it covers, or the zoomed span (stretched) until the
   * kernel sends that span binned anew. */
  private onData(): void {
    const t0: number = this.model.get('t0');
    const t1: number = this.model.get('t1');
    if (this.zoom && (t0 !== this.zoom[0] || t1 !== this.zoom[1])) {
      [this.lo, this.hi] = this.zoom;
    } else {
      this.lo = t0;
      this.hi = t1;
      this.zoomData = null;
    }
    this.scheduleDraw();
  }

  /** The timeline to draw: the kernel's answer for the zoomed span, else the model's. */
  private shown(): ITimeline & { calls: number[] } {
    if (this.zoomData && this.zoom) {
      return { ...this.zoomData, lo: this.lo, hi: this.hi, calls: (this.zoomData as any).calls || [] };
    }
    return {
      rows: this.model.get('rows') || [],
      calls: this.model.get('calls') || [],
      buckets: this.model.get('buckets'),
      t0: this.model.get('t0'),
      t1: this.model.get('t1'),
      cells: (this.model as RunChartsModel).cells,
      lo: this.lo,
      hi: this.hi
    };
  }

  /** Ask the kernel for the zoomed span on its control channel, which answers
   * while a blocking cell holds the shell channel (the `window` trait waits). */
  private askZoom(lo: number, hi: number): void {
    const kernel = (this.model.widget_manager as any).kernel;
    const jobId: string = this.model.get('job_id');
    if (!kernel || !jobId) {
      return;
    }
    ask(kernel, { op: 'timeline', job_id: jobId, window: [lo, hi] })
      .then(async reply => {
        const tl = reply?.timeline;
        if (!tl || !this.zoom || this.zoom[0] !== lo || this.zoom[1] !== hi) {
          return;
        }
        const cells = await inflate(b64bytes(tl.cells_z));
        this.zoomData = { ...tl, cells, lo, hi };
        this.el.dataset.zoomSource = 'control';
        this.scheduleDraw();
      })
      .catch(() => undefined); // no answer: the window trait asks again when the cell ends
  }

  private scheduleDraw(): void {
    if (!this.frame) {
      this.frame = window.requestAnimationFrame(() => this.draw());
    }
  }

  private draw(): void {
    this.frame = 0;
    const width = this.el.clientWidth;
    if (width <= 0) {
      return; // a hidden tab: drawn when it is shown (the resize observer)
    }
    const text =
      getComputedStyle(this.el).getPropertyValue('--jp-ui-font-color1').trim() || '#333333';
    const tl = this.shown();
    const rows = tl.rows;
    const calls = tl.calls;
    const hist: IHistogram = this.model.get('hist') || {};
    const total = calls.reduce((a, b) => a + b, 0);
    this.head.textContent = rows.length
      ? `${total} calls on ${rows.length} worker slots, ${seconds(this.lo)} to ${seconds(this.hi)}` +
        ' · drag across the timeline to zoom, double-click for the whole job'
      : 'No call has started yet.';
    this.legend.innerHTML = legendHtml(tl.cells);
    this.timeline.width = width;
    this.timeline.style.width = `${width}px`;
    const pitch = drawTimeline(this.timeline, tl, text);
    this.histogram.width = width;
    this.histogram.style.width = `${width}px`;
    drawHistogram(this.histogram, hist, text);
    const d = this.el.dataset;
    d.rows = String(rows.length);
    d.labels = JSON.stringify(rows);
    d.t0 = String(tl.t0);
    d.t1 = String(tl.t1);
    d.pitch = String(pitch);
    d.left = String(LEFT);
    d.plotWidth = String(width - LEFT - RIGHT);
    d.lo = String(this.lo);
    d.hi = String(this.hi);
    d.calls = String(hist.n || 0);
    d.median = String(hist.median ?? '');
    d.p95 = String(hist.p95 ?? '');
    d.log = String(!!hist.log);
    d.drawn = String(((Number(d.drawn) || 0) + 1) % 1000000);
  }

  private timeAt(clientX: number): number {
    const box = this.timeline.getBoundingClientRect();
    const plotW = Math.max(1, box.width - LEFT - RIGHT);
    const f = Math.min(1, Math.max(0, (clientX - box.left - LEFT) / plotW));
    return this.lo + f * (this.hi - this.lo);
  }

  private onDown = (event: MouseEvent): void => {
    const box = this.timeline.getBoundingClientRect();
    if (event.clientX - box.left < LEFT) {
      return;
    }
    this.dragFrom = event.clientX;
    event.preventDefault();
  };

  private onMove = (event: MouseEvent): void => {
    if (this.dragFrom < 0) {
      return;
    }
    const box = this.timeline.getBoundingClientRect();
    const a = Math.max(box.left + LEFT, Math.min(this.dragFrom, event.clientX));
    const b = Math.min(box.right - RIGHT, Math.max(this.dragFrom, event.clientX));
    Object.assign(this.selection.style, {
      display: 'block',
      left: `${a - box.left}px`,
      width: `${Math.max(0, b - a)}px`,
      height: `${box.height - AXIS}px`
    });
  };

  private onUp = (event: MouseEvent): void => {
    if (this.dragFrom < 0) {
      return;
    }
    const from = this.dragFrom;
    this.dragFrom = -1;
    this.selection.style.display = 'none';
    if (Math.abs(event.clientX - from) < 4) {
      return; // a click, not a drag
    }
    const a = this.timeAt(Math.min(from, event.clientX));
    const b = this.timeAt(Math.max(from, event.clientX));
    if (b > a) {
      this.lo = a; // stretch what we have now; the kernel sends the span binned anew
      this.hi = b;
      this.zoom = [a, b];
      this.scheduleDraw();
      this.askZoom(a, b);
      this.model.set('window', [a, b]);
      this.model.save_changes();
    }
  };

  private onDoubleClick = (): void => {
    this.zoom = null;
    this.zoomData = null;
    this.onData();
    this.model.set('window', []);
    this.model.save_changes();
  };
}
