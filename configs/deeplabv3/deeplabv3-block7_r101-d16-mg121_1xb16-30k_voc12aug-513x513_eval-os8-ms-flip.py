# Tab. 4, OS=8 + MS + Flip: output stride 8, multi-scale inputs {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}
# and their left-right flips, probabilities averaged. Switched on by --tta:
#     python tools/test.py configs/deeplabv3/<this file> \
#         work_dirs/deeplabv3-block7_r101-d16-mg121_1xb16-30k_voc12aug-513x513/iter_30000.pth --tta
_base_ = ['./deeplabv3-block7_r101-d16-mg121_1xb16-30k_voc12aug-513x513_eval-os8.py']
# The default tta_pipeline (configs/_base_/default_runtime.py) is this row.
paper_ref = dict(table='Table 4', row='OS=8 + MS + Flip', miou=79.35)
