"""mlbook.transfer"""
