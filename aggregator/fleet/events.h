// Fleet events (rank changes, thermal transitions, nodes going stale) and where they go once
// detected. The fleet state detects them as frames arrive and as data ages; an EventSink stores
// them and hands them to watchers (Fleet.Events, Fleet.WatchLeaderboard).
#ifndef FLEETWES_AGGREGATOR_FLEET_EVENTS_H_
#define FLEETWES_AGGREGATOR_FLEET_EVENTS_H_

#include <vector>

#include "fleetwes/v1/fleet.pb.h"

namespace fleetwes::aggregator {

// Receives events in detection order. Implementations are thread-safe and return quickly: they
// are called on ingest's path (never with the fleet state's lock held), so slow work such as
// writing to the database is queued, and a full queue drops and counts rather than blocks.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Publish(std::vector<v1::Event> events) = 0;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_FLEET_EVENTS_H_
