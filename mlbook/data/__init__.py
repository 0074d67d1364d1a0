"""mlbook.data"""
