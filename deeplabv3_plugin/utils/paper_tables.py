"""The paper's result tables as data: every row, its mIoU and the protocol that produced it.

Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", arXiv:1706.05587v3; mIoU (%) on VOC 2012 val unless noted. A row is
``(table, row)``, as in a config's ``paper_ref``. ``model`` keys everything that changes training,
so rows of different tables that evaluate the same model the same way are one measurement (Tab.
5's last row, Tab. 6 OS=16, Tab. 8's first row, Tab. 9 batch 16 and Tab. 10 16 -> 16 are all
77.21); ``inference`` is the test-time OS, scales and flip. Tab. 11 (asynchronous training) is not
listed: training here is synchronous.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ['Inference', 'PaperRow', 'PaperTable', 'PAPER_TABLES', 'find_row', 'VOC_MS_SCALES']

#: Multi-scale test of Sec. 4.2 (VOC).
VOC_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
#: Cityscapes val (App. C): "we could fit scales = {0.75, 1, 1.25} on a K40 GPU".
CITYSCAPES_MS_SCALES = (0.75, 1.0, 1.25)
#: Cityscapes test (App. C): scales up to 2 and output stride 4.
CITYSCAPES_TEST_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


@dataclass(frozen=True)
class Inference:
    """How a trained model is evaluated: test-time output stride, averaged input scales, flip."""

    output_stride: int
    scales: Tuple[float, ...] = (1.0, )
    flip: bool = False

    def key(self) -> Tuple[int, Tuple[float, ...], bool]:
        """A comparable form (scales rounded, sorted)."""
        return self.output_stride, tuple(sorted(round(s, 3) for s in self.scales)), self.flip

    def describe(self) -> str:
        """E.g. ``'OS=8 + MS(0.5..1.75) + Flip'``."""
        text = f'OS={self.output_stride}'
        if self.scales != (1.0, ):
            text += f' + MS({min(self.scales):g}..{max(self.scales):g})'
        return text + (' + Flip' if self.flip else '')


@dataclass(frozen=True)
class PaperRow:
    """One number of the paper: ``model`` and ``inference`` are None where it cannot be
    reproduced here; ``split='test'`` rows are scored by the evaluation server only."""

    table: str
    row: str
    miou: Optional[float]
    model: Optional[str]
    inference: Optional[Inference]
    split: str = 'val'
    note: str = ''


@dataclass(frozen=True)
class PaperTable:
    """A table: its name, what it varies, its rows in the paper's order."""

    name: str
    title: str
    rows: Tuple[PaperRow, ...]


def _mg(multi_grid: Tuple[int, int, int]) -> str:
    return 'MG(' + ','.join(map(str, multi_grid)) + ')'


def cascade_model(depth: int, block: int, multi_grid=(1, 1, 1), output_stride: int = 16) -> str:
    """Key of a cascade model (Sec. 3.2): ResNet depth, last block (4..7), multi-grid, train OS."""
    return f'cascade R{depth} block{block} {_mg(multi_grid)} trainOS{output_stride} b16 crop513'


def aspp_model(multi_grid=(1, 2, 4), rates=(6, 12, 18), image_pooling: bool = True,
               output_stride: int = 16, batch: int = 16, crop: int = 513, bn: str = 'trained',
               labels: str = 'full', pretrain: str = 'ImageNet', data: str = 'VOC trainaug') -> str:
    """Key of an ASPP model (Sec. 3.3) with its training protocol (Sec. 4.1, App. A)."""
    pool = '+pool' if image_pooling else 'nopool'
    return (f'aspp R101 {_mg(multi_grid)} rates{rates} {pool} trainOS{output_stride} b{batch} '
            f'crop{crop} BN-{bn} labels-{labels} {pretrain} {data}')


def _table(name: str, title: str, *rows: Tuple) -> PaperTable:
    return PaperTable(name, title, tuple(PaperRow(name, *row) for row in rows))


def _inference_rows(model: str, numbers: Tuple[float, float, float, float],
                    scales: Tuple[float, ...]) -> Tuple[Tuple, ...]:
    """The four cumulative inference-strategy rows (Tab. 4, 6, 12) of one trained model."""
    os16, os8, ms, flip = numbers
    return (('OS=16', os16, model, Inference(16)), ('OS=8', os8, model, Inference(8)),
            ('OS=8 + MS', ms, model, Inference(8, scales)),
            ('OS=8 + MS + Flip', flip, model, Inference(8, scales, True)))


BEST_ASPP = aspp_model()
_T3 = {(1, 1, 1): (68.39, 73.21, 75.34, 75.76), (1, 2, 1): (70.23, 75.67, 76.09, 76.66),
       (1, 2, 3): (73.14, 75.78, 75.96, 76.11), (1, 2, 4): (73.45, 75.74, 75.85, 76.02),
       (2, 2, 2): (71.45, 74.30, 74.70, 74.62)}
_COCO_STAGE2 = aspp_model(output_stride=8, bn='frozen', pretrain='COCO',
                          data='VOC trainval bootstrapped')

PAPER_TABLES: Tuple[PaperTable, ...] = (
    _table('Table 1', 'Going deeper: ResNet-50 + block7, output stride at train and test',
           *((f'OS={os_}', miou, cascade_model(50, 7, output_stride=os_), Inference(os_))
             for os_, miou in ((8, 75.18), (16, 73.88), (32, 70.06), (64, 59.99), (128, 42.34),
                               (256, 20.29)))),
    _table('Table 2', 'Cascaded blocks at output stride 16, no multi-grid',
           *((f'ResNet-{depth}, block{block}', miou, cascade_model(depth, block), Inference(16))
             for depth, numbers in ((50, (64.81, 72.14, 74.29, 73.88)),
                                    (101, (68.39, 73.21, 75.34, 75.76)))
             for block, miou in zip((4, 5, 6, 7), numbers))),
    _table('Table 3', 'Multi-grid in the ResNet-101 cascade, output stride 16',
           *((f'{_mg(mg)}, block{block}', miou, cascade_model(101, block, mg), Inference(16))
             for mg, numbers in _T3.items() for block, miou in zip((4, 5, 6, 7), numbers))),
    _table('Table 4', 'Inference strategy, cascade model (block7, MG(1,2,1), trained at OS 16)',
           *_inference_rows(cascade_model(101, 7, (1, 2, 1)), (76.66, 78.05, 78.93, 79.35),
                            VOC_MS_SCALES)),
    _table('Table 5', 'ASPP at output stride 16, ResNet-101 (block4)',
           ('MG(1,1,1), ASPP(6,12,18)', 75.36, aspp_model((1, 1, 1), image_pooling=False),
            Inference(16)),
           ('MG(1,2,1), ASPP(6,12,18)', 75.93, aspp_model((1, 2, 1), image_pooling=False),
            Inference(16)),
           ('MG(1,2,4), ASPP(6,12,18)', 76.58, aspp_model(image_pooling=False), Inference(16)),
           ('MG(1,2,4), ASPP(6,12,18,24)', 76.46,
            aspp_model(rates=(6, 12, 18, 24), image_pooling=False), Inference(16)),
           ('MG(1,2,4), ASPP(6,12,18), image pooling', 77.21, BEST_ASPP, Inference(16))),
    _table('Table 6', 'Inference strategy, MG(1,2,4) + ASPP(6,12,18) + image pooling',
           *_inference_rows(BEST_ASPP, (77.21, 78.51, 79.45, 79.77), VOC_MS_SCALES),
           ('OS=8 + MS + Flip + COCO', 82.70, aspp_model(pretrain='COCO'),
            Inference(8, VOC_MS_SCALES, True))),
    _table('Table 7', 'PASCAL VOC 2012 test set',
           ('DeepLabv3', 85.7, _COCO_STAGE2, Inference(8, VOC_MS_SCALES, True), 'test',
            'VOC 2012 test labels are not public: `tools/test.py <config> <ckpt> --tta` writes '
            'the PNGs to submit to the evaluation server.'),
           ('DeepLabv3-JFT', 86.9, None, None, 'test',
            'ResNet-101 pretrained on JFT-300M, which is not public: not reproducible here.')),
    _table('Table 8', 'Training protocol (ASPP model, OS 16, batch 16)',
           ('crop 513, upsample logits, fine-tune BN', 77.21, BEST_ASPP, Inference(16)),
           ('crop 513, upsample logits, frozen BN', 75.95, aspp_model(bn='frozen'),
            Inference(16)),
           ('crop 513, downsample labels, fine-tune BN', 76.01, aspp_model(labels='downsampled'),
            Inference(16)),
           ('crop 321, upsample logits, fine-tune BN', 67.22, aspp_model(crop=321),
            Inference(16))),
    _table('Table 9', 'Batch size (ASPP model, OS 16 at train and test)',
           *((f'batch {batch}', miou, aspp_model(batch=batch), Inference(16))
             for batch, miou in ((4, 64.43), (8, 75.76), (12, 76.49), (16, 77.21)))),
    _table('Table 10', 'Train and eval output stride (ASPP model; batch 6, 16, 24 at OS 8, 16, 32)',
           *((f'train OS={train}, eval OS={test}', miou,
              aspp_model(output_stride=train, batch={8: 6, 16: 16, 32: 24}[train]),
              Inference(test))
             for test, numbers in ((16, (74.45, 77.21, 75.90)), (8, (75.62, 78.51, 75.75)))
             for train, miou in zip((8, 16, 32), numbers))),
    _table('Table 12', 'Cityscapes val, trained on train_fine (90K iterations, crop 769)',
           *_inference_rows(aspp_model(crop=769, data='Cityscapes train_fine'),
                            (77.23, 77.82, 79.06, 79.30), CITYSCAPES_MS_SCALES)),
    _table('Table 13', 'Cityscapes test, trained on trainval_fine + coarse',
           ('DeepLabv3', 81.3, aspp_model(crop=769, data='Cityscapes trainval+coarse'),
            Inference(4, CITYSCAPES_TEST_SCALES, True), 'test',
            'Cityscapes test labels are not public: `tools/test.py <config> <ckpt> --tta` '
            'writes the label-id PNGs to submit to the evaluation server.')),
)

_ROWS: Dict[Tuple[str, str], PaperRow] = {(r.table, r.row): r for t in PAPER_TABLES for r in t.rows}


def find_row(table: str, row: str) -> Optional[PaperRow]:
    """The row a ``paper_ref`` names, or None if the paper has no such row."""
    return _ROWS.get((str(table), str(row)))
