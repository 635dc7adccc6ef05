"""A PyTorch reference of yolojax's YOLOv1 train step: same models, loss, targets, optimizer.

`benchmarks/train_step.py` times it against the JAX step on the same device, so its figure is
a ratio. Everything here is written from the yolojax docstrings, not translated from the JAX
code, and `tests/torch_reference_test.py` checks that the two agree (loss values and
gradients, target grids, parameter counts):

* backbones: Darknet from the layer specs of `yolojax.models.darknet` (conv without bias +
  BatchNorm or GroupNorm(32) + LeakyReLU(0.1), padding k // 2, 2×2/2 max-pools); torchvision's
  ResNet and VGG (the layouts yolojax ports weights from).
* heads: 'fc', 'seed' and 'conv' as documented in `yolojax.models.yolo`.
* targets: one object per cell, the largest box wins (`yolojax.targets.encode`).
* loss: `yolojax.losses.yolo_loss` (responsible box by IoU, rescore, signed sqrt,
  no-object on unassigned predictors), summed and divided by the batch size.
* optimizer: `torch.optim` SGD / Adam (L2 weight decay added to the gradient, as optax's
  `add_decayed_weights` before the optimizer) or AdamW, with the config's gradient clipping;
  weight decay on kernels only (parameter groups), as yolojax's mask.

Tensors follow the library's conventions: images NHWC float32 in, outputs
`(N, S, S, C + 5B)`, boxes normalized yxyx. Inside, the model runs NCHW (optionally in
PyTorch's channels-last memory format).
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from yolojax.models.darknet import DARKNET24, DARKNET_TINY, MAXPOOL

# Bounds the signed square root's slope at 0 (the value yolojax.losses uses).
SQRT_EPSILON = 1e-6
_DARKNET_SPECS = {"darknet": DARKNET24, "darknet_gn": DARKNET24, "darknet_tiny": DARKNET_TINY}


def _norm(kind: str, channels: int, num_groups: int) -> nn.Module:
    """BatchNorm (eps 1e-5, momentum 0.1) or GroupNorm (eps 1e-5)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
    return nn.GroupNorm(num_groups, channels, eps=1e-5)


def conv_block(in_channels, out_channels, kernel, stride, norm, num_groups=32):
    """Conv (no bias, padding kernel // 2) → norm → LeakyReLU(0.1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        _norm(norm, out_channels, num_groups),
        nn.LeakyReLU(0.1),
    )


class Backbone(nn.Module):
    """A backbone's feature extractor and its pooled penultimate vector ('seed' head input)."""

    def __init__(self, features: nn.Module, pre_logits: nn.Module):
        super().__init__()
        self.features = features
        self.pre_logits = pre_logits


def darknet_backbone(name: str, num_groups: int) -> Backbone:
    """Darknet from its yolojax layer spec; pre-logits = global average pool."""
    layers, channels = [], 3
    norm = "group" if name == "darknet_gn" else "batch"
    for layer in _DARKNET_SPECS[name]:
        if layer == MAXPOOL:
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(
            conv_block(channels, layer.features, layer.kernel, layer.stride, norm, num_groups)
        )
        channels = layer.features
    return Backbone(nn.Sequential(*layers), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))


def torchvision_backbone(name: str) -> Backbone:
    """torchvision ResNet (up to layer4) or VGG16 (`features`), untrained."""
    network = getattr(torchvision.models, name)(weights=None)
    if name.startswith("resnet"):
        features = nn.Sequential(
            network.conv1, network.bn1, network.relu, network.maxpool,
            network.layer1, network.layer2, network.layer3, network.layer4,
        )  # fmt: skip
        return Backbone(features, nn.Sequential(network.avgpool, nn.Flatten()))
    # VGG's penultimate vector: its classifier up to the second 4096 layer (ReLU, Dropout).
    pre_logits = nn.Sequential(network.avgpool, nn.Flatten(), *list(network.classifier)[:6])
    return Backbone(network.features, pre_logits)


class YOLO(nn.Module):
    """Backbone + 'fc' / 'seed' / 'conv' head; NHWC images → (N, S, S, C + 5B) float32.

    The head is built for one input size (`image_size`): the conv head's first stride and
    the fc head's input width depend on the backbone's feature-map size, as in yolojax.
    """

    def __init__(self, model_config, image_size: int):
        super().__init__()
        name = model_config.backbone
        if name in _DARKNET_SPECS:
            self.backbone = darknet_backbone(name, model_config.num_groups)
        else:
            self.backbone = torchvision_backbone(name)
        self.grid_size = size = model_config.grid_size
        self.head_kind = model_config.head
        self.out_features = model_config.num_classes + 5 * model_config.num_boxes
        with torch.no_grad():
            _, channels, height, width = self.backbone.features(
                torch.zeros(1, 3, image_size, image_size)
            ).shape
        if self.head_kind == "seed":
            with torch.no_grad():
                dim = self.backbone.pre_logits.eval()(torch.zeros(1, channels, height, width))
            self.head = nn.Linear(dim.shape[-1], size * size * self.out_features)
        elif self.head_kind == "fc":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(size),
                nn.Flatten(),
                nn.Linear(size * size * channels, model_config.fc_hidden),
                nn.Dropout(model_config.dropout_rate),
                nn.LeakyReLU(0.1),
                nn.Linear(model_config.fc_hidden, size * size * self.out_features),
            )
        else:
            self.head = self._conv_head(model_config, channels, (height, width))
        if self.head_kind != "seed":
            del self.backbone.pre_logits  # unused: yolojax creates no variables for it

    def _conv_head(self, model_config, channels: int, feature_size: tuple) -> nn.Module:
        size, num_layers = self.grid_size, model_config.head_conv_layers
        width = model_config.head_channels or min(1024, channels)
        norm = "group" if model_config.backbone == "darknet_gn" else "batch"
        first_stride = 2 if feature_size == (2 * size, 2 * size) and num_layers > 0 else 1
        layers = [] if first_stride == 2 else [nn.AdaptiveAvgPool2d(size)]
        for index in range(num_layers):
            stride = first_stride if index == 0 else 1
            layers.append(conv_block(channels, width, 3, stride, norm, model_config.num_groups))
            channels = width
        layers.append(nn.Conv2d(channels, self.out_features, 1))
        return nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) NHWC images → (N, S, S, C + 5B) float32 raw outputs."""
        x = self.backbone.features(images.permute(0, 3, 1, 2))
        if self.head_kind == "seed":
            x = self.head(self.backbone.pre_logits(x))
        elif self.head_kind == "fc":
            x = self.head(x)
        else:
            x = self.head(x).permute(0, 2, 3, 1)
        size = self.grid_size
        return x.reshape(x.shape[0], size, size, self.out_features).float()


def encode_targets(boxes, labels, mask, *, grid_size: int, num_classes: int) -> torch.Tensor:
    """Padded boxes → YOLOv1 target grids, batched.

    Args:
      boxes: (N, M, 4) normalized yxyx. labels: (N, M) int. mask: (N, M) bool.

    Returns:
      (N, S, S, C + 5) float32: one-hot class, objectness, x, y (centre offset in its cell),
      w, h (size in cell units). Per cell the largest valid box wins (ties: lowest index).
    """
    s = grid_size
    ymin, xmin, ymax, xmax = boxes.unbind(-1)
    height, width = ymax - ymin, xmax - xmin
    valid = mask.bool() & (height > 0) & (width > 0)
    centre_y, centre_x = (ymin + ymax) / 2 * s, (xmin + xmax) / 2 * s
    row = centre_y.floor().clamp(0, s - 1).long()
    col = centre_x.floor().clamp(0, s - 1).long()
    cells = torch.arange(s * s, device=boxes.device)
    in_cell = (row * s + col)[..., None] == cells  # (N, M, S*S)
    priority = torch.where(valid, height * width, -torch.inf)
    candidates = torch.where(in_cell, priority[..., None], -torch.inf)
    winner = candidates.argmax(dim=1)  # (N, S*S); the first maximum wins ties
    has_object = (in_cell & valid[..., None]).any(dim=1)  # (N, S*S)

    def pick(values):
        return values.gather(1, winner)

    geometry = torch.stack(
        [
            pick(centre_x) - cells % s,
            pick(centre_y) - torch.div(cells, s, rounding_mode="floor"),
            pick(width) * s,
            pick(height) * s,
        ],
        dim=-1,
    )
    one_hot = F.one_hot(pick(labels.long()), num_classes).float()
    grid = torch.cat([one_hot, torch.ones_like(geometry[..., :1]), geometry], dim=-1)
    grid = torch.where(has_object[..., None], grid, 0.0)
    return grid.reshape(boxes.shape[0], s, s, num_classes + 5)


def _corners(xywh):
    """(..., 4) [x, y, w, h] in cell units → (..., 4) [ymin, xmin, ymax, xmax]."""
    x, y, w, h = xywh.unbind(-1)
    return torch.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], dim=-1)


def _iou(a, b):
    """IoU of broadcastable (..., 4) yxyx boxes; 0 where the union is empty."""
    size = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(
        min=0
    )
    intersection = size[..., 0] * size[..., 1]

    def area(box):
        return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)

    union = area(a) + area(b) - intersection
    return torch.where(union > 0, intersection / torch.where(union > 0, union, 1.0), 0.0)


def yolo_loss(
    predictions,
    targets,
    *,
    num_classes: int,
    num_boxes: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    rescore: bool = True,
    noobj_on_unassigned: bool = True,
):
    """The YOLOv1 sum-squared loss, the semantics of `yolojax.losses.yolo_loss`.

    Args:
      predictions: (N, S, S, C + 5B) raw outputs; per box [confidence, x, y, w, h].
      targets: (N, S, S, C + 5) grids from `encode_targets`.

    Returns:
      (loss, metrics): the loss divided by N and the terms 'coord', 'object', 'noobj',
      'class', plus 'loss' and 'iou' (mean IoU of responsible predictors).
    """
    predictions, targets = predictions.float(), targets.float()
    batch_size = predictions.shape[0]
    class_scores = predictions[..., :num_classes]
    fields = predictions[..., num_classes:].unflatten(-1, (num_boxes, 5))
    confidence, pred_xywh = fields[..., 0], fields[..., 1:]  # (N,S,S,B), (N,S,S,B,4)
    target_class = targets[..., :num_classes]
    has_object = targets[..., num_classes]  # (N,S,S)
    target_xywh = targets[..., num_classes + 1 :]  # (N,S,S,4)

    with torch.no_grad():
        iou = _iou(_corners(pred_xywh), _corners(target_xywh)[..., None, :])  # (N,S,S,B)
        best = F.one_hot(iou.argmax(dim=-1), num_boxes).float()
    responsible = best * has_object[..., None]

    xy_error = ((pred_xywh[..., :2] - target_xywh[..., None, :2]) ** 2).sum(-1)
    pred_wh = pred_xywh[..., 2:]
    signed_sqrt = pred_wh * (pred_wh.abs() + SQRT_EPSILON).rsqrt()
    wh_error = ((signed_sqrt - target_xywh[..., None, 2:].sqrt()) ** 2).sum(-1)
    coord = lambda_coord * (responsible * (xy_error + wh_error)).sum()
    confidence_target = iou if rescore else torch.ones_like(iou)
    object_term = (responsible * (confidence - confidence_target) ** 2).sum()
    if noobj_on_unassigned:
        noobj_mask = 1.0 - responsible
    else:
        noobj_mask = (1.0 - has_object)[..., None].expand_as(confidence)
    noobj = lambda_noobj * (noobj_mask * confidence**2).sum()
    class_term = (has_object[..., None] * (class_scores - target_class) ** 2).sum()

    terms = {"coord": coord, "object": object_term, "noobj": noobj, "class": class_term}
    metrics = {name: value / batch_size for name, value in terms.items()}
    metrics["loss"] = loss = sum(metrics.values())
    metrics["iou"] = (responsible * iou).sum() / has_object.sum().clamp(min=1.0)
    return loss, metrics


def make_optimizer(parameters, train_config, *, fused: bool = False):
    """The `torch.optim` equivalent of `yolojax.optim.create_optimizer` at a fixed rate."""
    name, rate, decay = (
        train_config.optimizer,
        train_config.learning_rate,
        train_config.weight_decay,
    )
    implementation = {"fused": True} if fused else {"foreach": True}
    parameters = list(parameters)
    # Kernels only, as yolojax.optim: no decay for biases and normalization parameters.
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, rate, momentum=train_config.momentum, **implementation)
    if name == "adam":
        return torch.optim.Adam(groups, rate, **implementation)
    if name == "adamw":
        return torch.optim.AdamW(groups, rate, **implementation)
    raise ValueError(f"train_config.optimizer must be 'sgd', 'adam' or 'adamw'; got {name!r}.")


class TrainStep:
    """One training step of `YOLO` on a batch, as `yolojax.train_lib.train_step` does it:
    targets encoded on the device, forward, loss, backward, optional gradient clipping,
    optimizer update. BatchNorm uses the batch's statistics.

    Args:
      config: a yolojax config (`model`, `loss`, `train` sections are read).
      image_size: square input size.
      device: a `torch.device`.
      dtype: 'float32' or 'bfloat16' (autocast compute; parameters stay float32).
      channels_last: PyTorch's NHWC memory format for the model and its inputs.
      compile: None (eager), or the `torch.compile` mode ('default', 'reduce-overhead':
        CUDA graphs, 'max-autotune') in which the forward + loss are compiled.
    """

    def __init__(
        self, config, image_size, device, *, dtype="float32", channels_last=False, compile=None
    ):
        self.config, self.device = config, device
        self.model = YOLO(config.model, image_size).to(device).train()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizer = make_optimizer(
            self.model.parameters(), config.train, fused=device.type == "cuda"
        )
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"
        )
        self.loss_fn = torch.compile(self._loss, mode=compile) if compile else self._loss

    def _loss(self, images, boxes, labels, mask):
        model_config = self.config.model
        grid = encode_targets(
            boxes,
            labels,
            mask,
            grid_size=model_config.grid_size,
            num_classes=model_config.num_classes,
        )
        with self.autocast:
            outputs = self.model(images)
        loss, _ = yolo_loss(
            outputs,
            grid,
            num_classes=model_config.num_classes,
            num_boxes=model_config.num_boxes,
            **self.config.loss,
        )
        return loss

    def to_device(self, batch: dict) -> tuple:
        """NumPy batch (`image` NHWC, `boxes`, `labels`, `mask`) → device tensors."""
        images = torch.from_numpy(batch["image"]).to(self.device)
        # NHWC data viewed as NCHW is exactly the channels-last layout; contiguous NCHW
        # otherwise, so the conv sees the memory format it was set up for.
        images = images.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
        images = images.permute(0, 2, 3, 1)
        rest = (torch.from_numpy(batch[key]).to(self.device) for key in ("boxes", "labels", "mask"))
        return (images, *rest)

    def __call__(self, images, boxes, labels, mask) -> torch.Tensor:
        """Runs one step; returns the loss (not synchronized)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(images, boxes, labels, mask)
        loss.backward()
        if self.config.train.grad_clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip_norm)
        self.optimizer.step()
        return loss.detach()


def num_parameters(model: nn.Module) -> int:
    """Trainable parameter count (BatchNorm running statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())
