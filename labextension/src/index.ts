import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { CallGridModel, CallGridView } from './callgrid';
import { RunChartsModel, RunChartsView } from './charts';
import { LogViewModel, LogViewView } from './logview';
import { untrackRequests } from './control';
import { JobsPanel } from './panel';
import { MODULE_NAME, MODULE_VERSION } from './version';

/**
 * Registers sif_magic's widget module (CallGrid, LogView, RunCharts) with the
 * Jupyter widget manager of JupyterLab 4 and Notebook 7.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'sif-magic:widgets',
  description: 'Per-call state grid, log viewer and run charts for sif_magic jobs.',
  requires: [IJupyterWidgetRegistry],
  autoStart: true,
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({
      name: MODULE_NAME,
      version: MODULE_VERSION,
      exports: { CallGridModel, CallGridView, LogViewModel, LogViewView, RunChartsModel, RunChartsView }
    });
  }
};

/**
 * The side panel: the jobs and workers of the current notebook's kernel.
 */
const panel: JupyterFrontEndPlugin<void> = {
  id: 'sif-magic:panel',
  description: 'A side panel listing the sif_magic jobs and workers of the current kernel.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    untrackRequests();
    const widget = new JobsPanel(app);
    app.shell.add(widget, 'left', { rank: 1000 });
    app.commands.addCommand('sif-magic:open-panel', {
      label: 'sif_magic: Jobs and Workers',
      execute: () => app.shell.activateById(widget.id)
    });
  }
};

export default [plugin, panel];
