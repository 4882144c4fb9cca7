# trainaug with the 321 x 321 training crop of DeepLab v1/v2, for the appendix ablation (Tab. 8):
# only the training crop changes; evaluation still pads to 513 x 513.
_base_ = ['./voc12aug_513x513.py']
crop_size = (321, 321)
train_pipeline = _base_.train_pipeline
train_pipeline[4].crop_size = crop_size  # RandomCrop
train_pipeline[5].size = crop_size  # Pad
dataset_train = dict(_base_.dataset_train, pipeline=train_pipeline)
dataset_aug = dict(_base_.dataset_aug, pipeline=train_pipeline)
train_dataloader = dict(dataset=dict(datasets=[dataset_train, dataset_aug]))
