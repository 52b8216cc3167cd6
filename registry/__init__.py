"""loradock.registry"""
