/**
 * The sif_magic side panel: the jobs of the current notebook's kernel (running
 * and finished, with their bars) and its workers (SLURM jobs too); clicking a
 * job opens its grid, timeline, histogram and log viewer in the panel, and
 * clicking a call in that grid shows the call's lines.
 *
 * It talks to the kernel on the control channel (`sif_magic_request`, see
 * sif_magic/display/panel.py), which ipykernel serves on a thread of its own:
 * so the panel answers while a blocking %%sifmap cell holds the shell channel.
 * The kernel's busy/idle around these requests is kept out of the notebook's
 * status (`untracked_message_types`).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { ask } from './control';
import { make } from './dom';
import { seconds } from './histogram';
import { JobDetail, esc } from './jobdetail';
import { STATE_COLOURS, STATE_NAMES } from './states';

const POLL_MS = 1000;
const SLOW_POLL_MS = 5000; // while the kernel does not answer (sif_magic not loaded)

function barHtml(job: any): string {
  const parts: string[] = [];
  STATE_NAMES.forEach((name, code) => {
    const count = job.counts?.[name] || 0;
    if (count && name !== 'queued') {
      const pct = (100 * count) / Math.max(1, job.n);
      parts.push(`<i data-state="${name}" style="width:${pct}%;background:${STATE_COLOURS[code]}"></i>`);
    }
  });
  return `<div class="sif-panel-bar">${parts.join('')}</div>`;
}

export class JobsPanel extends Widget {
  private status: HTMLDivElement;
  private jobsEl: HTMLDivElement;
  private workersEl: HTMLDivElement;
  private detail: JobDetail;
  private kernelOwner: any = null;
  private selected = '';
  private call = -1;
  private timer = 0;
  private busy = false;
  private replies = 0;

  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'sif-magic-panel';
    this.title.caption = 'sif_magic: jobs and workers';
    this.title.iconClass = 'sif-panel-icon';
    this.addClass('sif-panel');
    this.status = make('div', 'sif-panel-status');
    this.jobsEl = make('div', 'sif-panel-jobs');
    this.workersEl = make('div', 'sif-panel-workers-box');
    this.detail = new JobDetail(call => {
      this.call = call;
      this.schedule(0);
    });
    this.node.append(
      this.status,
      make('h3', '', 'Jobs'),
      this.jobsEl,
      make('h3', '', 'Workers'),
      this.workersEl,
      this.detail.node
    );
    this.jobsEl.addEventListener('click', this.onJobClick);
    this.status.textContent = 'Open a notebook whose kernel runs sif_magic.';
    this.schedule(0);
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }

  /** The kernel of the notebook (or console) in front, else of the last one that was. */
  private kernel(): Kernel.IKernelConnection | null {
    const current: any = this.app.shell.currentWidget;
    if (current?.sessionContext?.session?.kernel) {
      if (current !== this.kernelOwner) {
        this.selected = '';
        this.detail.clear();
      }
      this.kernelOwner = current;
    }
    return this.kernelOwner?.sessionContext?.session?.kernel ?? null;
  }

  private schedule(ms: number): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.tick(), ms);
  }

  /** Ask for the jobs (and the selected job) while the panel is shown. */
  async tick(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    const kernel = this.kernel();
    if (!this.isVisible || !kernel || this.busy) {
      this.schedule(POLL_MS);
      return;
    }
    this.busy = true;
    let next = POLL_MS;
    try {
      const listing = await ask(kernel, { op: 'jobs' });
      this.showJobs(listing);
      if (this.selected) {
        const reply = await ask(kernel, { op: 'job', job_id: this.selected, call: this.call });
        if (!reply.error && reply.job?.job_id === this.selected) {
          this.detail.show(reply, Math.max(200, this.node.clientWidth - 20));
        }
      }
      this.node.dataset.state = 'answering';
      this.replies++;
      this.node.dataset.replies = String(this.replies);
    } catch (err) {
      this.status.textContent = String((err as Error).message || err);
      this.node.dataset.state = 'silent';
      next = SLOW_POLL_MS;
    } finally {
      this.busy = false;
    }
    this.schedule(next);
  }

  private showJobs(reply: any): void {
    const path = this.kernelOwner?.context?.path || this.kernelOwner?.sessionContext?.path || '';
    if (reply.error) {
      this.status.textContent = reply.error;
      return;
    }
    const jobs: any[] = reply.jobs || [];
    this.status.textContent = `${path} · ${jobs.length} job${jobs.length === 1 ? '' : 's'}`;
    this.node.dataset.jobs = String(jobs.length);
    this.jobsEl.innerHTML = jobs.length
      ? jobs
          .slice()
          .reverse()
          .map(
            job =>
              `<div class="sif-panel-job${job.job_id === this.selected ? ' sif-selected' : ''}"` +
              ` data-job-id="${esc(job.job_id)}" data-done="${job.done}">` +
              `<b>${esc(job.name || 'job')}</b> · <code>${esc(job.job_id)}</code><br>` +
              `<span class="sif-panel-status">${job.n} calls · ${job.done ? 'finished' : 'running'}` +
              ` · ${(job.counts?.done || 0) + (job.counts?.failed || 0)}/${job.n}` +
              `${job.counts?.failed ? ` · ${job.counts.failed} failed` : ''}` +
              ` · ${seconds(job.elapsed)}</span>${barHtml(job)}</div>`
          )
          .join('')
      : '<i>No job yet in this kernel.</i>';
    const rows: any[] = reply.workers || [];
    this.node.dataset.workers = String(rows.length);
    this.workersEl.innerHTML = rows.length
      ? '<table class="sif-panel-workers"><tr><th>host</th><th>pid</th><th>busy</th><th>state</th></tr>' +
        rows
          .map(
            r =>
              `<tr class="sif-panel-worker"><td>${esc(r.host)}</td><td>${esc(r.pid)}</td>` +
              `<td>${esc(r.busy)}/${esc(r.slots)}</td><td>${esc(r.state)}` +
              `${r.slurm_job ? ` (SLURM ${esc(r.slurm_job)})` : ''}</td></tr>`
          )
          .join('') +
        '</table>'
      : '<i>No workers seen yet.</i>';
  }

  private onJobClick = (event: MouseEvent): void => {
    const el = (event.target as HTMLElement).closest('.sif-panel-job') as HTMLElement | null;
    if (!el) {
      return;
    }
    this.selected = el.dataset.jobId || '';
    this.call = -1;
    this.jobsEl.querySelectorAll('.sif-panel-job').forEach(j => j.classList.remove('sif-selected'));
    el.classList.add('sif-selected');
    this.detail.clear('<i>Asking the kernel…</i>');
    this.schedule(0);
  };
}
