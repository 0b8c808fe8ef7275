"""foveal.trainer"""
