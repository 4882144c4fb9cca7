# Runtime shared by every DeepLabV3 experiment.
#
# mmseg's own runtime (default scope, logging, visualiser, env_cfg) already says the right thing,
# so it is inherited by scope (resolved from the installed mmseg's .mim/configs) and only what the
# plugin adds is written here.
_base_ = ['mmseg::_base_/default_runtime.py']

# Registers MultiGridResNet, DeepLabV3Head, DeepLabV3, the bootstrapping samplers, ... in mmseg's
# registries when the config is loaded; a failed import is an error, not a silent fallback to
# mmseg's own classes. deeplabv3_plugin.runtime opts in to the safe loading of mmengine
# checkpoints under torch >= 2.6 and to CPU distributed runs.
custom_imports = dict(imports=['deeplabv3_plugin', 'deeplabv3_plugin.runtime'],
                      allow_failed_imports=False)
default_scope = 'mmseg'

# `train_dataloader.batch_size` is the batch of the whole run, all processes together, as the
# paper's "batch size 16" and the `1xb16` of the config names. The plugin's tools (tools/train.py,
# tools/dist_train.sh, Slurm, `mim train deeplabv3_plugin`) give each of N processes
# batch_size / N (and refuse a batch that N does not divide). `batch_size_per_process=True` reads
# it per process instead, mmengine's meaning, which mmseg's own tools (`mim train mmseg`) always
# use: there, N GPUs train at N x batch_size. TrainingBatchHook logs the batch at the start of
# training and warns when the total is not the paper row's (`paper_ref`).
batch_size_per_process = False
custom_hooks = [dict(type='TrainingBatchHook')]

# A fixed seed: mmengine builds the training sampler (its shuffling seed) before `--resume`
# restores the interrupted run's seed, so without one a resumed run would draw another
# permutation of the images than the uninterrupted run. Override with `--cfg-options
# randomness.seed=N` for another draw.
randomness = dict(seed=0)

# Test-time augmentation, switched on by `tools/test.py --tta`: the paper's multi-scale test
# (Sec. 4.2, Tab. 4 and 6) averages the class *probabilities* of the scales {0.5, ..., 1.75}, and
# "Flip" adds the left-right flipped input of every scale. SegTTAModel averages softmax outputs,
# which is that definition. Rows that use other scales (Cityscapes, Tab. 12/13) or no flip
# override `tta_pipeline`. Defined here, not in the dataset bases, because it is the same for
# every dataset. Images and labels load with mmseg's transforms (the plugin's datasets name a
# file they cannot decode). Each scaled view is then padded by the model's data preprocessor to
# the dataset's test canvas (513 x 513 on VOC) when it is smaller; the TF reference pads the
# image to 513 first and scales the padded canvas, which differs slightly for scales below 1.
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            # Slot 0: the scales; slot 1: the flips. Rows of other tables replace one slot:
            # `tta_pipeline = _base_.tta_pipeline` then `tta_pipeline[1].transforms[1] = [...]`.
            [
                dict(type='Resize', scale_factor=s, keep_ratio=True)
                for s in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
