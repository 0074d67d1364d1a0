"""mlbook.meta"""
