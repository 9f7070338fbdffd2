"""Transport plumbing shared by sources and channels: HTTP clients (:mod:`.http`), the SFTP client
(:mod:`.sftp`) and staging names for atomic uploads (:mod:`.staging`).

A low layer: it imports only kernel modules (errors, retry, connections), never sources or channels.
"""
