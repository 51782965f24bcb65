_base_ = ['./mask-rcnn_vmamba-t_fpn_1x_coco.py']

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa
model = dict(
    backbone=dict(size='small', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)))
