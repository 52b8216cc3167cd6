"""loradock.training"""
