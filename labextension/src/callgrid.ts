/**
 * CallGrid: one cell per call, coloured by state, drawn on a <canvas>.
 *
 * The kernel sends the whole state table as one zlib-compressed binary trait
 * (`states_z`, one byte per call); the model inflates it once and every view
 * paints it with putImageData, so 100,000 calls cost one message and one
 * pixel loop per update. Hovering asks the kernel for `describe(i)`; clicking
 * tells it the call picked. Both go on the kernel's control channel, answered
 * while a blocking cell runs (the kernel then sets the synced `selected`
 * trait), and fall back to a custom message / setting `selected` where that
 * channel does not answer. Running calls that
 * reported how far they are (`sif_magic.report`) come in the `progress` trait
 * (`{index: [fraction, message]}`): their cell is filled from the left in the
 * colour of done by that fraction, and the tooltip shows it without asking.
 */
import { DOMWidgetModel, DOMWidgetView, ISerializers } from '@jupyter-widgets/base';

import { askWidget } from './control';
import { STATE_COLOURS, STATE_NAMES, bytesOf, inflate, packedColours, stateName } from './states';
import { MODULE_NAME, MODULE_VERSION } from './version';

const COLOURS = packedColours();
/** Cell sizes tried from largest to smallest until the grid fits MAX_HEIGHT. */
const CELL_SIZES = [14, 10, 8, 6, 4, 3, 2];
const MAX_HEIGHT = 240;
const DESCRIBE_DELAY_MS = 60;
/** Outcomes (done, failed, cancelled): a reported fraction no longer shows. */
const TERMINAL = new Set([2, 3, 4]);

export class CallGridModel extends DOMWidgetModel {
  /** The decoded state table (one byte per call); replaced on every update. */
  states!: Uint8Array;
  /** Calls per state code, computed once per update for all views. */
  counts!: number[];
  private decodeSeq!: number;
  private appliedSeq!: number;

  defaults(): Backbone.ObjectHash {
    return {
      ...super.defaults(),
      _model_name: 'CallGridModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'CallGridView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      n: 0,
      states_z: null,
      selected: -1,
      progress: {},
      via_control: false
    };
  }

  static serializers: ISerializers = {
    ...DOMWidgetModel.serializers,
    // Keep the DataView ipywidgets hands us; the model inflates it.
    states_z: { deserialize: (value: unknown): unknown => value }
  };

  initialize(attributes: Backbone.ObjectHash, options: any): void {
    super.initialize(attributes, options);
    this.states = new Uint8Array(0);
    this.counts = new Array(STATE_NAMES.length).fill(0);
    this.decodeSeq = 0;
    this.appliedSeq = 0;
    this.on('change:states_z', this.decode, this);
    this.decode();
  }

  private decode(): void {
    const seq = ++this.decodeSeq;
    inflate(bytesOf(this.get('states_z')))
      .then(states => {
        if (seq < this.appliedSeq) {
          return; // an older update finishing after a newer one
        }
        this.appliedSeq = seq;
        this.states = states;
        const counts = new Array(STATE_NAMES.length).fill(0);
        for (let i = 0; i < states.length; i++) {
          const s = states[i];
          if (s < counts.length) {
            counts[s]++;
          }
        }
        this.counts = counts;
        this.trigger('states', states);
      })
      .catch(err => console.error('sif-magic: cannot decode call states', err));
  }
}

interface ILayout {
  cols: number;
  rows: number;
  size: number;
  pitch: number;
}

export class CallGridView extends DOMWidgetView {
  private canvas!: HTMLCanvasElement;
  private scroller!: HTMLDivElement;
  private legend!: HTMLDivElement;
  private tooltip!: HTMLDivElement;
  private layout: ILayout = { cols: 1, rows: 0, size: 14, pitch: 15 };
  private frame = 0;
  private hover = -1;
  private describeTimer = 0;
  private describeReq = 0;
  private lastWidth = -1;
  private lastN = -1;
  private resizeObserver: ResizeObserver | null = null;

  render(): void {
    this.el.classList.add('sif-grid');
    this.legend = document.createElement('div');
    this.legend.className = 'sif-grid-legend';
    this.scroller = document.createElement('div');
    this.scroller.className = 'sif-grid-scroller';
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'sif-grid-canvas';
    this.tooltip = document.createElement('div');
    this.tooltip.className = 'sif-grid-tooltip';
    this.scroller.appendChild(this.canvas);
    this.el.append(this.legend, this.scroller, this.tooltip);

    this.canvas.addEventListener('mousemove', this.onMouseMove);
    this.canvas.addEventListener('mouseleave', this.onMouseLeave);
    this.canvas.addEventListener('click', this.onClick);
    this.listenTo(this.model, 'states', this.onStates);
    this.listenTo(this.model, 'change:selected', this.scheduleDraw);
    this.listenTo(this.model, 'change:progress', this.onProgress);
    this.listenTo(this.model, 'change:n', this.relayout);
    this.listenTo(this.model, 'msg:custom', this.onCustomMessage);
    if (typeof ResizeObserver !== 'undefined') {
      this.resizeObserver = new ResizeObserver(() => this.relayout());
      this.resizeObserver.observe(this.el);
    }
    this.relayout();
    this.updateLegend();
    this.send({ type: 'hello', version: MODULE_VERSION });
  }

  remove(): any {
    this.resizeObserver?.disconnect();
    window.clearTimeout(this.describeTimer);
    if (this.frame) {
      window.cancelAnimationFrame(this.frame);
    }
    return super.remove();
  }

  private get gridModel(): CallGridModel {
    return this.model as CallGridModel;
  }

  private onStates(): void {
    this.updateLegend();
    this.scheduleDraw();
    if (this.hover >= 0) {
      this.showLocalTooltip(this.hover);
    }
  }

  private onProgress(): void {
    this.scheduleDraw();
    if (this.hover >= 0 && this.tooltip.dataset.source === 'local') {
      this.showLocalTooltip(this.hover);
    }
  }

  /** What call `index` reported last, if it runs and reported. */
  private reported(index: number): [number, string] | null {
    const entry = (this.model.get('progress') || {})[String(index)];
    return Array.isArray(entry) ? [Number(entry[0]) || 0, String(entry[1] ?? '')] : null;
  }

  private updateLegend(): void {
    const counts = this.gridModel.counts;
    const n: number = this.model.get('n');
    // Calls past the end of the state table have not been reported: queued.
    const unreported = Math.max(0, n - this.gridModel.states.length);
    const items: string[] = [];
    for (let code = 0; code < STATE_NAMES.length; code++) {
      const count = counts[code] + (code === 0 ? unreported : 0);
      if (count === 0 && code > 2) {
        continue; // the rare states appear only when they happen
      }
      items.push(
        `<span class="sif-grid-key" data-state="${STATE_NAMES[code]}">` +
          `<i style="background:${STATE_COLOURS[code]}"></i>${STATE_NAMES[code]} ${count}</span>`
      );
    }
    this.legend.innerHTML = items.join('');
  }

  /** Pick a cell size that fits the width, then redraw. */
  private relayout(): void {
    const n: number = this.model.get('n');
    const width = this.scroller.clientWidth || this.el.clientWidth || 600;
    if (width === this.lastWidth && n === this.lastN) {
      return;
    }
    this.lastWidth = width;
    this.lastN = n;
    let layout: ILayout = this.layout;
    for (const size of CELL_SIZES) {
      const pitch = size >= 6 ? size + 1 : size;
      const cols = Math.max(1, Math.floor(width / pitch));
      const rows = Math.ceil(n / cols);
      layout = { cols: Math.min(cols, Math.max(n, 1)), rows, size, pitch };
      if (rows * pitch <= MAX_HEIGHT) {
        break;
      }
    }
    this.layout = layout;
    this.el.dataset.cols = String(layout.cols);
    this.el.dataset.rows = String(layout.rows);
    this.el.dataset.pitch = String(layout.pitch);
    this.el.dataset.cellSize = String(layout.size);
    this.scheduleDraw();
  }

  private scheduleDraw(): void {
    if (!this.frame) {
      this.frame = window.requestAnimationFrame(() => this.draw());
    }
  }

  private draw(): void {
    this.frame = 0;
    const started = performance.now();
    const { cols, rows, size, pitch } = this.layout;
    const n: number = this.model.get('n');
    const width = Math.max(1, cols * pitch);
    const height = Math.max(1, rows * pitch);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext('2d');
    if (!ctx) {
      return;
    }
    const image = ctx.createImageData(width, height);
    const px = new Uint32Array(image.data.buffer);
    const states = this.gridModel.states;
    const known = Math.min(n, states.length);
    let col = 0;
    let rowStart = 0;
    for (let i = 0; i < n; i++) {
      const colour = COLOURS[i < known ? states[i] : 0];
      let off = rowStart + col * pitch;
      for (let dy = 0; dy < size; dy++, off += width) {
        for (let dx = 0; dx < size; dx++) {
          px[off + dx] = colour;
        }
      }
      if (++col === cols) {
        col = 0;
        rowStart += pitch * width;
      }
    }
    this.fillProgress(px, width, n, known, states);
    ctx.putImageData(image, 0, 0);
    const selected: number = this.model.get('selected');
    if (selected >= 0 && selected < n) {
      const x = (selected % cols) * pitch;
      const y = Math.floor(selected / cols) * pitch;
      ctx.lineWidth = 2;
      // The theme's strongest text colour: black in light themes, white in dark ones.
      ctx.strokeStyle =
        getComputedStyle(this.el).getPropertyValue('--jp-ui-font-color0').trim() || '#000000';
      ctx.strokeRect(x - 1, y - 1, size + 2, size + 2);
    }
    this.el.dataset.selected = String(selected);
    this.el.dataset.drawn = String(n);
    this.el.dataset.drawMs = (performance.now() - started).toFixed(1);
  }

  /** The reported fraction of each running call, as the done colour from the left. */
  private fillProgress(px: Uint32Array, width: number, n: number, known: number, states: Uint8Array): void {
    const { cols, size, pitch } = this.layout;
    const progress = this.model.get('progress') || {};
    let filled = 0;
    for (const key of Object.keys(progress)) {
      const i = Number(key);
      const state = i < known ? states[i] : 0;
      if (!(i >= 0 && i < n) || TERMINAL.has(state)) {
        continue; // ended meanwhile: its state colour says it
      }
      const cells = Math.round(Math.min(1, Math.max(0, this.reported(i)![0])) * size);
      let off = Math.floor(i / cols) * pitch * width + (i % cols) * pitch;
      for (let dy = 0; dy < size; dy++, off += width) {
        for (let dx = 0; dx < cells; dx++) {
          px[off + dx] = COLOURS[2];
        }
      }
      filled++;
    }
    this.el.dataset.progressCells = String(filled);
  }

  private indexAt(event: MouseEvent): number {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const { cols, pitch } = this.layout;
    const col = Math.floor(x / pitch);
    const row = Math.floor(y / pitch);
    if (x < 0 || y < 0 || col >= cols) {
      return -1;
    }
    const index = row * cols + col;
    return index < this.model.get('n') ? index : -1;
  }

  private onMouseMove = (event: MouseEvent): void => {
    const index = this.indexAt(event);
    if (index !== this.hover) {
      this.hover = index;
      this.onHoverChange(index);
    }
    this.placeTooltip(event);
  };

  /** Next to the pointer, flipped to its left near the right edge. */
  private placeTooltip(event: MouseEvent): void {
    const box = this.el.getBoundingClientRect();
    const x = event.clientX - box.left;
    const width = this.tooltip.offsetWidth;
    const left = x + 14 + width > box.width ? Math.max(0, x - 14 - width) : x + 14;
    this.tooltip.style.left = `${left}px`;
    this.tooltip.style.top = `${event.clientY - box.top + 14}px`;
  }

  private onHoverChange(index: number): void {
    window.clearTimeout(this.describeTimer);
    if (index < 0) {
      this.tooltip.style.display = 'none';
      return;
    }
    this.showLocalTooltip(index);
    this.describeTimer = window.setTimeout(() => this.askDescription(index), DESCRIBE_DELAY_MS);
  }

  /** The kernel's description of call `index`: on the control channel, else by custom message. */
  private askDescription(index: number): void {
    const req = ++this.describeReq;
    void askWidget(this.model, { op: 'describe', index }).then(reply => {
      if (reply) {
        this.showDescription(index, req, reply.text);
      } else {
        this.send({ type: 'describe', index, req, view: this.cid });
      }
    });
  }

  /** The kernel's answer for call `index`, if it is still the one hovered and asked last. */
  private showDescription(index: number, req: number, text: unknown): void {
    if (req === this.describeReq && index === this.hover) {
      this.tooltip.textContent = String(text);
      this.tooltip.dataset.source = 'kernel';
    }
  }

  private onMouseLeave = (): void => {
    this.hover = -1;
    window.clearTimeout(this.describeTimer);
    this.tooltip.style.display = 'none';
  };

  private onClick = (event: MouseEvent): void => {
    const index = this.indexAt(event);
    if (index < 0) {
      return;
    }
    void askWidget(this.model, { op: 'select', index }).then(reply => {
      if (reply) {
        // the kernel knows (it sets `selected` too): shown at once, nothing to send
        this.model.set_state({ selected: index });
      } else {
        this.model.set('selected', index);
        this.model.save_changes();
      }
    });
  };

  /** What the front-end knows without asking the kernel. */
  private showLocalTooltip(index: number): void {
    const states = this.gridModel.states;
    const state = index < states.length ? stateName(states[index]) : 'queued';
    const reported = this.reported(index);
    this.tooltip.textContent =
      `call ${index} · ${state}` +
      (reported
        ? ` · ${Math.round(reported[0] * 100)}%` + (reported[1] ? `\n» ${reported[1]}` : '')
        : '');
    this.tooltip.dataset.index = String(index);
    this.tooltip.dataset.source = 'local';
    this.tooltip.style.display = 'block';
  }

  private onCustomMessage(content: any): void {
    if (content?.type === 'description' && content.view === this.cid) {
      this.showDescription(content.index, content.req, content.text);
    }
  }
}
