"""The PyTorch side of scripts/benchmark.py: torchvision's train step, timed.

Imported only when torch is installed; tiny_flax itself never needs it.
"""

import torch
import torchvision

from tiny_flax import throughput


def train_step_timer(config, name, num_classes, batch_size, size, dtype,
                     num_steps, compiled):
  """Seconds per train step of torchvision's model, measured at each call.

  The same optimizer and label smoothing as `config`; on CUDA with
  channels_last and AMP, the fast PyTorch setting the goals compare against.
  `dtype`: the compute dtype's name, float32, bfloat16 or float16 (AMP with
  a GradScaler, as tiny_flax scales its float16 loss).
  """
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True
  model = getattr(torchvision.models, name)(num_classes=num_classes).to(device)
  images = torch.randn(batch_size, 3, size, size, device=device)
  if device == 'cuda':
    model = model.to(memory_format=torch.channels_last)
    images = images.to(memory_format=torch.channels_last)
  labels = torch.randint(0, num_classes, (batch_size,), device=device)
  opt = (torch.optim.SGD(model.parameters(), lr=config.learning_rate,
                         momentum=config.momentum)
         if config.optimizer == 'sgd' else
         torch.optim.Adam(model.parameters(), lr=config.learning_rate))
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
  forward = torch.compile(model) if compiled else model
  autocast = torch.autocast(device, dtype=getattr(torch, dtype),
                            enabled=dtype != 'float32')
  scaler = torch.amp.GradScaler(device, enabled=dtype == 'float16')

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = loss_fn(forward(images), labels)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()

  def sync():
    if device == 'cuda':
      torch.cuda.synchronize()
  model.train()
  step()  # torch.compile builds here, outside the timed warm-up
  return lambda: throughput.timed(step, sync, num_steps)
