"""loradock.serving"""
