package virtio

// NeedEvent exports vring_need_event for tests.
var NeedEvent = needEvent
