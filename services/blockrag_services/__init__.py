"""BlockRAG's Ray Serve applications: one per service, each a thin gRPC servicer over libs/.

The gRPC proxy of Ray Serve routes a call to the application named by the `application`
metadata key: segmentation, precompute, cache_index, generation, admin.
"""
