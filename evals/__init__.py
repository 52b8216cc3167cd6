"""loradock.evals"""
