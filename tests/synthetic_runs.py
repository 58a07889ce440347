"""Synthetic workroots for the experiments tests: workdirs as mnv2_jax.main leaves them."""

import json
import pathlib


def write_run(workroot: pathlib.Path, name: str, *, model='mobilenet_v2', width=1.0,
              resolution=32, expansion_ratio=6, activation='linear', shortcut='bottleneck',
              evals=((100, 0.30), (200, 0.50)), finished=True, madds=None, seed=0, starts=None):
  """A workdir as mnv2_jax.main leaves it (config, run_info, metrics, maybe final metrics)."""
  workdir = workroot / name
  (workdir / 'checkpoints' / '200').mkdir(parents=True)
  (workdir / 'checkpoints' / '200' / 'config.json').write_text('{}')  # not a run
  madds = madds if madds is not None else int(1e6 * width * width * resolution * resolution / 100)
  (workdir / 'config.json').write_text(json.dumps({
      'seed': seed,
      'model': {'name': model, 'width_multiplier': width, 'expansion_ratio': expansion_ratio,
                'bottleneck_activation': activation, 'shortcut': shortcut},
      'data': {'dataset': 'procedural_shapes', 'resolution': resolution},
      'train': {'num_steps': evals[-1][0]}}))
  (workdir / 'run_info.json').write_text(json.dumps({
      'model': model, 'width_multiplier': width, 'resolution': resolution,
      'expansion_ratio': expansion_ratio if model == 'mobilenet_v2' else None,
      'params': int(1e6 * width), 'params_no_bn': int(1e6 * width) - 100, 'madds': madds,
      'num_classes': 10, 'num_devices': 1, 'process_count': 1, 'steps_per_epoch': 50,
      'total_steps': evals[-1][0], **({'starts': starts} if starts is not None else {})}))
  lines = []
  for step, top1 in evals:
    lines.append({'step': step, 'epoch': step / 50, 'train_loss': 1.0, 'learning_rate': 0.1,
                  'images_per_second': 100.0})
    lines.append({'step': step, 'epoch': step / 50, 'eval_loss': 1.0, 'eval_top1': top1,
                  'eval_top5': min(1.0, top1 + 0.3), 'eval_ema_top1': top1 - 0.01,
                  'eval_ema_top5': min(1.0, top1 + 0.29)})
  text = ''.join(json.dumps(line) + '\n' for line in lines)
  if not finished:
    text += '{"step": 250, "epo'  # a line cut short by a kill
  (workdir / 'metrics.jsonl').write_text(text)
  if finished:
    step, top1 = evals[-1]
    (workdir / 'final_metrics.json').write_text(json.dumps({
        'step': step, 'eval_top1': top1, 'eval_top5': min(1.0, top1 + 0.3),
        'eval_ema_top1': top1 - 0.01, 'eval_ema_top5': min(1.0, top1 + 0.29),
        'best_eval_top1': max(v for _, v in evals),
        'best_eval_ema_top1': max(v for _, v in evals) - 0.01,
        'wall_time_seconds': 12.5, 'params': int(1e6 * width), 'madds': madds}))
  return workdir
