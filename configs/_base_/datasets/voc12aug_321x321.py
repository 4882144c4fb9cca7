# trainaug with the 321 x 321 training crop of DeepLab v1/v2, for the appendix ablation (Tab. 8):
# only the training crop changes; evaluation still pads to 513 x 513.
_base_ = ['./voc12aug_513x513.py']
crop_size = (321, 321)
train_pipeline = _base_.train_pipeline
train_pipeline[4].crop_size = crop_size  # RandomCrop
train_pipeline[5].size = crop_size  # Pad
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(dataset, pipeline=train_pipeline)
        for dataset in _base_.train_dataloader.dataset.datasets
    ]))
