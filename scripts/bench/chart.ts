/**
 * The benchmark's chart: one panel per charted metric, a bar per peer at the median of the
 * measured rounds and a dot per round. Vega-Lite compiled to Vega, rendered to SVG in pure
 * JavaScript (no canvas, no browser, no binary).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Sample, ScenarioInfo } from './stats.js';

interface Point {
  panel: string;
  peer: string;
  round: number;
  value: number;
}

export function chartPoints(infos: readonly ScenarioInfo[], samples: readonly Sample[]): Point[] {
  const points: Point[] = [];
  for (const info of infos) {
    for (const metric of info.metrics.filter((m) => m.chart)) {
      const panel = `${info.id}: ${metric.label} (${metric.better} is better)`;
      for (const sample of samples) {
        const value = sample.metrics[metric.key];
        if (sample.scenario !== info.id || sample.warmup || !Number.isFinite(value)) continue;
        points.push({ panel, peer: sample.peer, round: sample.round, value });
      }
    }
  }
  return points;
}

export function chartSpec(points: Point[], title: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    data: { values: points },
    facet: {
      field: 'panel',
      type: 'nominal',
      title: null,
      header: { labelFontSize: 11 },
      sort: [...new Set(points.map((p) => p.panel))], // scenario order, not alphabetical
    },
    columns: 4,
    resolve: { scale: { x: 'independent', y: 'independent' }, axis: { x: 'independent' } },
    spec: {
      width: 170,
      height: 150,
      layer: [
        {
          mark: { type: 'bar', opacity: 0.55 },
          encoding: {
            x: {
              field: 'peer',
              type: 'nominal',
              title: null,
              sort: ['ioe', 'raw-node', 'raw-node+sha256', 'python', 'nginx'],
            },
            y: { aggregate: 'median', field: 'value', type: 'quantitative', title: null },
            color: { field: 'peer', type: 'nominal', legend: null },
          },
        },
        {
          mark: { type: 'point', filled: true, size: 22, color: 'black', opacity: 0.7 },
          encoding: {
            x: {
              field: 'peer',
              type: 'nominal',
              sort: ['ioe', 'raw-node', 'raw-node+sha256', 'python', 'nginx'],
            },
            y: { field: 'value', type: 'quantitative' },
          },
        },
      ],
    },
  };
}

/** The SVG text of the chart. */
export async function renderChart(
  infos: readonly ScenarioInfo[],
  samples: readonly Sample[],
  title: string,
): Promise<string> {
  const spec = compile(chartSpec(chartPoints(infos, samples), title)).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
