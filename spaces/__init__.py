"""loradock.spaces"""
