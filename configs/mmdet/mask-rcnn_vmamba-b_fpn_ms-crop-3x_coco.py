_base_ = ['./mask-rcnn_vmamba-t_fpn_ms-crop-3x_coco.py']

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth'  # noqa
model = dict(
    backbone=dict(size='base', drop_path_rate=0.6, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
