_base_ = ['./upernet_vmamba-t_8xb2-160k_ade20k-512x512.py']

pretrained = 'https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_small_0229_ckpt_epoch_222.pth'  # noqa
model = dict(
    backbone=dict(size='small', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)))
