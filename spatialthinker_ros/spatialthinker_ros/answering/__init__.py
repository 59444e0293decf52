"""The answering layer (ROS-free): one pipeline from frames and a question to a typed answer with
3D, used by the node and by every offline tool alike, and the parameter table it is configured by.
"""
