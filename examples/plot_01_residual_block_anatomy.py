"""
Anatomy of a residual block
===========================

placeholder
"""
print("hi")
