"""foveal.verifiers"""
