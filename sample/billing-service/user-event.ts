/** The data of UserCreated and UserUpdated as the users service publishes it. */
export interface UserEvent {
  id: string;
  name: string;
  email: string;
  version: number;
}
